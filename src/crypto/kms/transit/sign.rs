//! Store-head signatures with a Transit `ed25519` key (`<key>-head-signing`): `sign/<name>`
//! returns `vault:v<N>:<signature>`, and `keys/<name>` the public key of each version.

use super::{Failure, KmsError, PublicKey, Signed, Transit, split_version};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

impl Transit {
    fn bad_answer(&self, problem: String) -> KmsError {
        KmsError::Backend {
            backend: self.http.backend(),
            key: self.signing.clone(),
            problem,
        }
    }

    /// `sign/<signing key>`: the version and the signature.
    async fn transit_sign(
        &self,
        message: &[u8],
    ) -> Result<Result<(u32, Vec<u8>), Failure>, KmsError> {
        let path = format!("sign/{}", self.signing);
        let body =
            serde_json::to_vec(&json!({ "input": B64.encode(message) })).expect("serializes");
        let data = match self.http.post(&path, &body).await {
            Ok(d) => d,
            Err(f) => return Ok(Err(f)),
        };
        let text = data["data"]["signature"].as_str().unwrap_or_default();
        let (version, sig) = split_version(text).ok_or_else(|| {
            self.bad_answer("sign answered without a `vault:v<N>:` signature".into())
        })?;
        let sig = B64
            .decode(sig)
            .map_err(|_| self.bad_answer("sign answered a signature that is not base64".into()))?;
        Ok(Ok((version, sig)))
    }

    /// Creates the `ed25519` signing key (the first signature of a store).
    async fn create_signing_key(&self) -> Result<(), KmsError> {
        let path = format!("keys/{}", self.signing);
        let body = serde_json::to_vec(&json!({ "type": "ed25519" })).expect("serializes");
        match self.http.post(&path, &body).await {
            Ok(_) => Ok(()),
            Err(f) => Err(self.http.error(f, &self.signing, &path).await),
        }
    }

    pub(super) async fn sign_message(&self, message: &[u8]) -> Result<Signed, KmsError> {
        let path = format!("sign/{}", self.signing);
        let (version, signature) = match self.transit_sign(message).await? {
            Ok(s) => s,
            Err(Failure::Status {
                status: 400,
                message: m,
            }) if m.contains("not found") => {
                self.create_signing_key().await?;
                match self.transit_sign(message).await? {
                    Ok(s) => s,
                    Err(f) => return Err(self.http.error(f, &self.signing, &path).await),
                }
            }
            Err(f) => return Err(self.http.error(f, &self.signing, &path).await),
        };
        let public_key = self
            .public_key(version)
            .await?
            .ok_or_else(|| self.bad_answer(format!("signing key v{version} has no public key")))?;
        // Transit signs plain Ed25519 (not prehashed): check it, so that a key of another
        // type or mode is refused here rather than by every later `verify`
        if !public_key.verify(message, &signature) {
            return Err(self.bad_answer(format!(
                "the signature of key `{}` v{version} does not verify as Ed25519; it must be an `ed25519` key",
                self.signing
            )));
        }
        Ok(Signed {
            public_key,
            signature,
        })
    }

    /// The signing key's versions (`None`: it does not exist yet).
    async fn signing_key_info(&self) -> Result<Option<Value>, KmsError> {
        let path = format!("keys/{}", self.signing);
        match self.http.get(&path).await {
            Ok(d) => Ok(Some(d)),
            Err(Failure::NotFound) => Ok(None),
            Err(f) => Err(self.http.error(f, &self.signing, &path).await),
        }
    }

    /// The public key of signing-key version `version` (cached).
    async fn public_key(&self, version: u32) -> Result<Option<PublicKey>, KmsError> {
        let cached = |keys: &Vec<(u32, PublicKey)>| {
            keys.iter().find(|(v, _)| *v == version).map(|(_, k)| *k)
        };
        if let Some(k) = cached(&self.public_keys.lock().expect("public keys")) {
            return Ok(Some(k));
        }
        let Some(info) = self.signing_key_info().await? else {
            return Ok(None);
        };
        if info["data"]["type"].as_str() != Some("ed25519") {
            return Err(self.bad_answer(format!(
                "key `{}` is not an ed25519 key; holdfast signs store heads with one",
                self.signing
            )));
        }
        let text = info["data"]["keys"][version.to_string()]["public_key"]
            .as_str()
            .unwrap_or_default();
        let Some(k) = PublicKey::from_base64(text) else {
            return Err(self.bad_answer(format!(
                "key `{}` v{version} has no 32-byte public key",
                self.signing
            )));
        };
        self.public_keys
            .lock()
            .expect("public keys")
            .push((version, k));
        Ok(Some(k))
    }

    /// The newest version's public key; `None` before the first signature.
    pub(super) async fn current_signing_key(&self) -> Result<Option<PublicKey>, KmsError> {
        let Some(info) = self.signing_key_info().await? else {
            return Ok(None);
        };
        let latest = info["data"]["latest_version"]
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| self.bad_answer("key answer has no latest_version".into()))?;
        self.public_key(latest).await
    }
}
