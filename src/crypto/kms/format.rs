//! What the local keyring and the wrapped keys look like on disk. Frozen: a change is a new
//! version with a conversion; a reader refuses another format or a version it does not know.
//!
//! - The keyring file (outside the store), format `holdfast.keyring`: version 1 (KEKs and the
//!   blind-index master), version 2 (adds the head-signing key), version 3 (adds
//!   `min_decryption_version`, written once a KEK version is retired). Version 1 files still
//!   load and are rewritten as version 2 the first time something is signed. Golden files:
//!   `fixtures/formats/keyring-v3.json`, `keyring-v2.json`, `keyring-v1.json`.
//! - [`WrappedKeyV1`]: a wrapped DEK as manifests, landing headers, quarantine entries and
//!   Parquet footers record it.
//! - The wrapped blind-index secret of a store whose KEK is in a remote KMS (Transit), format
//!   `holdfast.index-secret` version 1, at `keys/index/v<20 digits>.json`: when it was made,
//!   the id it is wrapped under (the Transit context's DEK id) and the wrapped key. Golden
//!   file: `fixtures/formats/index-secret-v1.json`.

use super::WrappedKey;
use crate::format::FormatError;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

pub(super) const FORMAT: &str = "holdfast.keyring";
const VERSIONS: &[&str] = &["1", "2", "3"];

/// A wrapped DEK as every persisted format records it (version 1 of each of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrappedKeyV1 {
    kek_id: String,
    kek_version: u32,
    #[serde(with = "super::b64")]
    ciphertext: Vec<u8>,
}

impl From<&WrappedKey> for WrappedKeyV1 {
    fn from(w: &WrappedKey) -> Self {
        WrappedKeyV1 {
            kek_id: w.kek_id.clone(),
            kek_version: w.kek_version,
            ciphertext: w.ciphertext.clone(),
        }
    }
}

impl From<WrappedKeyV1> for WrappedKey {
    fn from(w: WrappedKeyV1) -> Self {
        WrappedKey {
            kek_id: w.kek_id,
            kek_version: w.kek_version,
            ciphertext: w.ciphertext,
        }
    }
}

pub(super) const INDEX_SECRET_FORMAT: &str = "holdfast.index-secret";

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum IndexSecretFile {
    #[serde(rename = "1")]
    V1(IndexSecretV1),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexSecretV1 {
    format: String,
    created_at: String,
    /// The id the secret is wrapped under, as a DEK's id (the Transit context's).
    secret_id: String,
    wrapped: WrappedKeyV1,
}

/// A store's wrapped blind-index secret (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSecret {
    pub created_at: String,
    pub secret_id: String,
    pub wrapped: WrappedKey,
}

impl IndexSecret {
    /// A new random 32-byte secret named `secret_id` (its DEK id: the context or AAD it is
    /// wrapped under), wrapped by `kms`; the plaintext is zeroized before this returns.
    pub async fn generate(
        kms: &dyn super::Kms,
        secret_id: &str,
        created_at: String,
    ) -> Result<Self, super::KmsError> {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        let secret = crate::crypto::DataKey::from_parts(secret_id.to_string(), bytes);
        bytes.zeroize();
        Ok(IndexSecret {
            created_at,
            secret_id: secret_id.to_string(),
            wrapped: kms.wrap(&secret).await?,
        })
    }

    /// The object's bytes, in today's version.
    pub fn encode(&self) -> Vec<u8> {
        crate::format::encode(&IndexSecretFile::V1(IndexSecretV1 {
            format: INDEX_SECRET_FORMAT.into(),
            created_at: self.created_at.clone(),
            secret_id: self.secret_id.clone(),
            wrapped: WrappedKeyV1::from(&self.wrapped),
        }))
    }

    /// Reads any version this holdfast knows.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let IndexSecretFile::V1(v) = crate::format::decode(bytes, INDEX_SECRET_FORMAT, &["1"])?;
        Ok(IndexSecret {
            created_at: v.created_at,
            secret_id: v.secret_id,
            wrapped: v.wrapped.into(),
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum KeyringFile {
    #[serde(rename = "1")]
    V1(KeyringV1),
    #[serde(rename = "2")]
    V2(KeyringV2),
    #[serde(rename = "3")]
    V3(KeyringV3),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringV1 {
    format: String,
    kek_id: String,
    primary: u32,
    keys: Vec<KeyringEntry>,
    /// Master secret the per-tenant blind-index keys are derived from (base64).
    index_master: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringV2 {
    format: String,
    kek_id: String,
    primary: u32,
    keys: Vec<KeyringEntry>,
    index_master: String,
    /// Ed25519 seed of the store-head signing key (base64).
    signing_key: String,
}

/// Version 3: version 2 and the oldest KEK version it still unwraps under (written once a
/// version is retired; until then files stay version 2).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringV3 {
    format: String,
    kek_id: String,
    primary: u32,
    keys: Vec<KeyringEntry>,
    index_master: String,
    signing_key: String,
    min_decryption_version: u32,
}

/// One KEK version (every keyring version).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyringEntry {
    pub version: u32,
    pub created_at: String,
    /// AES-256 key, base64.
    pub material: String,
}

/// A keyring file's contents, whatever its version (secrets still base64).
pub(super) struct Ring {
    pub kek_id: String,
    pub primary: u32,
    pub keys: Vec<KeyringEntry>,
    pub index_master: String,
    /// `None`: a version-1 file.
    pub signing_key: Option<String>,
    /// The oldest KEK version unwrapped under (1 before version 3).
    pub min_decryption_version: u32,
}

impl Ring {
    /// Wipes the secrets it holds.
    pub(super) fn zeroize(&mut self) {
        self.index_master.zeroize();
        if let Some(s) = self.signing_key.as_mut() {
            s.zeroize();
        }
        for k in &mut self.keys {
            k.material.zeroize();
        }
    }
}

pub(super) fn decode(bytes: &[u8]) -> Result<Ring, FormatError> {
    Ok(match crate::format::decode(bytes, FORMAT, VERSIONS)? {
        KeyringFile::V1(v) => Ring {
            kek_id: v.kek_id,
            primary: v.primary,
            keys: v.keys,
            index_master: v.index_master,
            signing_key: None,
            min_decryption_version: 1,
        },
        KeyringFile::V2(v) => Ring {
            kek_id: v.kek_id,
            primary: v.primary,
            keys: v.keys,
            index_master: v.index_master,
            signing_key: Some(v.signing_key),
            min_decryption_version: 1,
        },
        KeyringFile::V3(v) => Ring {
            kek_id: v.kek_id,
            primary: v.primary,
            keys: v.keys,
            index_master: v.index_master,
            signing_key: Some(v.signing_key),
            min_decryption_version: v.min_decryption_version,
        },
    })
}

/// The file's bytes: version 3 once a KEK version is retired, else version 2 when the ring
/// has a signing key (always, once written by this holdfast), else version 1. The ring's
/// secrets are wiped.
pub(super) fn encode(ring: Ring) -> Zeroizing<Vec<u8>> {
    let mut file = match ring.signing_key {
        Some(signing_key) if ring.min_decryption_version > 1 => KeyringFile::V3(KeyringV3 {
            format: FORMAT.into(),
            kek_id: ring.kek_id,
            primary: ring.primary,
            keys: ring.keys,
            index_master: ring.index_master,
            signing_key,
            min_decryption_version: ring.min_decryption_version,
        }),
        None => KeyringFile::V1(KeyringV1 {
            format: FORMAT.into(),
            kek_id: ring.kek_id,
            primary: ring.primary,
            keys: ring.keys,
            index_master: ring.index_master,
        }),
        Some(signing_key) => KeyringFile::V2(KeyringV2 {
            format: FORMAT.into(),
            kek_id: ring.kek_id,
            primary: ring.primary,
            keys: ring.keys,
            index_master: ring.index_master,
            signing_key,
        }),
    };
    let bytes = Zeroizing::new(crate::format::encode(&file));
    let (keys, master) = match &mut file {
        KeyringFile::V1(v) => (&mut v.keys, &mut v.index_master),
        KeyringFile::V2(v) => {
            v.signing_key.zeroize();
            (&mut v.keys, &mut v.index_master)
        }
        KeyringFile::V3(v) => {
            v.signing_key.zeroize();
            (&mut v.keys, &mut v.index_master)
        }
    };
    master.zeroize();
    for k in keys {
        k.material.zeroize();
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{altered, golden};

    fn sample(signing: bool) -> Ring {
        Ring {
            kek_id: "kek-0011223344556677".into(),
            primary: 2,
            keys: vec![
                KeyringEntry {
                    version: 1,
                    created_at: "2026-01-01T00:00:00Z".into(),
                    material: "AQ".repeat(21) + "AQ==",
                },
                KeyringEntry {
                    version: 2,
                    created_at: "2027-01-01T00:00:00Z".into(),
                    material: "Ag".repeat(21) + "Ag==",
                },
            ],
            index_master: "Aw".repeat(21) + "Aw==",
            signing_key: signing.then(|| "BA".repeat(21) + "BA=="),
            min_decryption_version: 1,
        }
    }

    #[test]
    fn version_3_records_the_retired_versions_and_reads_back() {
        let mut ring = sample(true);
        ring.min_decryption_version = 2;
        let bytes = encode(ring);
        golden("keyring-v3.json", &bytes);
        let r = decode(&bytes).unwrap();
        assert_eq!(
            (r.min_decryption_version, r.primary, r.keys.len()),
            (2, 2, 2)
        );
        // until a version is retired, files stay version 2
        let v2 = encode(sample(true));
        assert!(String::from_utf8_lossy(&v2).contains("\"version\": \"2\""));
    }

    #[test]
    fn version_2_is_frozen_and_reads_back() {
        let bytes = encode(sample(true));
        golden("keyring-v2.json", &bytes);
        let r = decode(&bytes).unwrap();
        let want = sample(true);
        assert_eq!(
            (r.kek_id, r.primary, r.index_master, r.signing_key),
            (
                want.kek_id,
                want.primary,
                want.index_master,
                want.signing_key
            )
        );
        let k: Vec<_> = r
            .keys
            .iter()
            .map(|k| (k.version, k.material.clone()))
            .collect();
        assert_eq!(
            k,
            vec![(1, "AQ".repeat(21) + "AQ=="), (2, "Ag".repeat(21) + "Ag==")]
        );
    }

    #[test]
    fn version_1_still_reads_and_stays_frozen() {
        let bytes = encode(sample(false));
        golden("keyring-v1.json", &bytes);
        let r = decode(&bytes).unwrap();
        assert!(r.signing_key.is_none() && r.keys.len() == 2);
        // a version-1 file with a signing key is not version 1
        let bad = altered(&encode(sample(true)), "version", "1");
        assert!(matches!(decode(&bad), Err(FormatError::Invalid { .. })));
    }

    #[test]
    fn other_formats_and_versions_are_refused_by_name() {
        let bytes = encode(sample(true));
        let e = decode(&altered(&bytes, "version", "4")).err().unwrap();
        assert!(
            matches!(e, FormatError::UnknownVersion { found: Some(ref v), .. } if v == "4"),
            "{e}"
        );
        let e = decode(&altered(&bytes, "format", "holdfast.manifest"))
            .err()
            .unwrap();
        assert!(matches!(e, FormatError::WrongFormat { .. }), "{e}");
    }

    #[test]
    fn an_index_secret_is_frozen_and_reads_back() {
        let s = IndexSecret {
            created_at: "2026-01-01T00:00:00Z".into(),
            secret_id: "holdfast-index-secret".into(),
            wrapped: WrappedKey {
                kek_id: "transit:transit/holdfast-platform".into(),
                kek_version: 1,
                ciphertext: b"vault:v1:AAAA".to_vec(),
            },
        };
        let bytes = s.encode();
        golden("index-secret-v1.json", &bytes);
        assert_eq!(IndexSecret::decode(&bytes).unwrap(), s);
        let e = IndexSecret::decode(&altered(&bytes, "version", "2")).unwrap_err();
        assert!(matches!(e, FormatError::UnknownVersion { .. }), "{e}");
        let e = IndexSecret::decode(&altered(&bytes, "format", "holdfast.keyring")).unwrap_err();
        assert!(matches!(e, FormatError::WrongFormat { .. }), "{e}");
    }

    #[test]
    fn a_wrapped_key_is_frozen() {
        let w = WrappedKey {
            kek_id: "kek-0011223344556677".into(),
            kek_version: 3,
            ciphertext: vec![1, 2, 3, 250],
        };
        let v1 = WrappedKeyV1::from(&w);
        golden("wrapped-key-v1.json", &crate::format::encode(&v1));
        assert_eq!(WrappedKey::from(v1), w);
    }
}
