//! The AWS KMS key's lifecycle as `keys status`, `rotate` and `retire` see it. AWS keeps a
//! key's older material inside the key and does not say which one a ciphertext used, so a
//! key has one version here (1): its age is the time since its newest rotation (or its
//! creation), a rotation changes no wrapped DEK (nothing to rewrap), and no version can be
//! retired on its own.

use super::*;
use crate::crypto::kms::KekVersion;

fn time(d: &aws_sdk_kms::primitives::DateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(d.secs(), 0)
}

impl AwsKms {
    /// `DescribeKey` for the creation date (a key that is not enabled is an error), `ListKeyRotations` for the newest rotation (a
    /// server without it, or a token that may not call it, leaves the creation date).
    pub(super) async fn key_info(&self) -> Result<KekInfo, KmsError> {
        let call = self.client.describe_key().key_id(&self.arn).send();
        let out = self.call(call, "DescribeKey").await?;
        // a disabled key still decrypts on some servers (moto does): say what AWS says
        let state = out.key_metadata().and_then(|m| m.key_state());
        if let Some(s) = state.filter(|s| **s != aws_sdk_kms::types::KeyState::Enabled) {
            return Err(errors::disabled(self, s.as_str()));
        }
        let created = out
            .key_metadata()
            .and_then(|m| m.creation_date())
            .and_then(time);
        let rotations = self.client.list_key_rotations().key_id(&self.arn).send();
        let rotated = match self.rt.run(rotations).await {
            Ok(Ok(r)) => r
                .rotations()
                .iter()
                .filter_map(|r| r.rotation_date().and_then(time))
                .max(),
            _ => None,
        };
        Ok(KekInfo {
            kek_id: self.arn.clone(),
            backend: self.describe(),
            primary: 1,
            min_decryption_version: 1,
            versions: vec![KekVersion {
                version: 1,
                created_at: rotated.or(created),
            }],
        })
    }

    pub(super) fn no_retirement(&self) -> KmsError {
        KmsError::Backend {
            backend: self.backend(),
            key: self.key.clone(),
            problem: "AWS KMS keeps every rotation's material usable inside the key and cannot retire it on its own; to stop decrypting old material, move the store to a new key and disable the old one in AWS".into(),
        }
    }
}
