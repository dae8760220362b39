//! Key-encryption keys. [`Kms`] wraps and unwraps DEKs; [`LocalKeyring`] is the embedded
//! default: a 0600 JSON file outside the store holding versioned AES-256 KEKs. OpenBao/Vault
//! Transit and AWS KMS implement the same trait in later work.
//!
//! Every backend guarantees: `unwrap(wrap(dek)) == dek`; a wrapped key altered, or presented
//! under another DEK id or KEK, fails with [`KmsError::InvalidCiphertext`] (never wrong bytes);
//! key material is never logged or put in an error.

use super::{Cipher, DataKey, aad};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::future::BoxFuture;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("KEK `{kek_id}` version {version} is not in {backend}")]
    KeyNotFound {
        backend: String,
        kek_id: String,
        version: u32,
    },
    #[error("wrapped key {dek_id} does not belong to KEK `{kek_id}` v{version} or was altered")]
    InvalidCiphertext {
        dek_id: String,
        kek_id: String,
        version: u32,
    },
    #[error("keyring {path}: {problem}")]
    Keyring { path: PathBuf, problem: String },
    #[error("keyring {path}: {source}")]
    KeyringIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A DEK wrapped by a KEK version. Safe to store anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    pub kek_id: String,
    pub kek_version: u32,
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
}

pub mod b64 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s).map_err(serde::de::Error::custom)
    }
}

pub trait Kms: std::fmt::Debug + Send + Sync + 'static {
    /// Backend name for messages, e.g. `local keyring /home/x/.config/holdfast/keyring.json`.
    fn describe(&self) -> String;
    /// The KEK id new DEKs are wrapped under.
    fn kek_id(&self) -> &str;
    fn wrap<'a>(&'a self, dek: &'a DataKey) -> BoxFuture<'a, Result<WrappedKey, KmsError>>;
    fn unwrap_key<'a>(
        &'a self,
        dek_id: &'a str,
        wrapped: &'a WrappedKey,
    ) -> BoxFuture<'a, Result<DataKey, KmsError>>;
    /// The tenant's blind-index key (HMAC key for participant addresses).
    fn index_key<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<IndexKey, KmsError>>;
}

/// A tenant's blind-index key; zeroized on drop.
pub type IndexKey = Zeroizing<[u8; 32]>;

const KEYRING_FORMAT: &str = "holdfast.keyring";

#[derive(Serialize, Deserialize)]
struct KeyringFile {
    format: String,
    version: u32,
    kek_id: String,
    primary: u32,
    keys: Vec<KeyringEntry>,
    /// Master secret the per-tenant blind-index keys are derived from.
    index_master: String,
}

#[derive(Serialize, Deserialize)]
struct KeyringEntry {
    version: u32,
    created_at: String,
    material: String,
}

struct Kek {
    version: u32,
    created_at: String,
    material: Zeroizing<[u8; 32]>,
}

/// The embedded default KMS: a local keyring file (mode 0600, never inside a store).
pub struct LocalKeyring {
    path: PathBuf,
    kek_id: String,
    primary: u32,
    keks: Vec<Kek>,
    index_master: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for LocalKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LocalKeyring({}, {} v{})",
            self.path.display(),
            self.kek_id,
            self.primary
        )
    }
}

fn dek_aad(kek_id: &str, version: u32, dek_id: &str) -> Vec<u8> {
    aad(&[
        b"holdfast.dek.v1",
        kek_id.as_bytes(),
        version.to_string().as_bytes(),
        dek_id.as_bytes(),
    ])
}

impl LocalKeyring {
    /// Creates a keyring with one fresh KEK. Refuses to overwrite an existing file.
    pub fn create(path: &Path, created_at: &str) -> Result<Self, KmsError> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let io = |source| KmsError::KeyringIo {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io)?;
        }
        let mut id = [0u8; 8];
        rand::rng().fill_bytes(&mut id);
        let mut material = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(material.as_mut());
        let mut index_master = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(index_master.as_mut());
        let ring = LocalKeyring {
            path: path.to_path_buf(),
            kek_id: format!("kek-{}", hex::encode(id)),
            primary: 1,
            keks: vec![Kek {
                version: 1,
                created_at: created_at.to_string(),
                material,
            }],
            index_master,
        };
        let text = Zeroizing::new(ring.to_json());
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(ring)
    }

    /// Loads a keyring; refuses one readable or writable by group or others.
    pub fn load(path: &Path) -> Result<Self, KmsError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |source| KmsError::KeyringIo {
            path: path.to_path_buf(),
            source,
        };
        let bad = |problem: String| KmsError::Keyring {
            path: path.to_path_buf(),
            problem,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "permissions are {mode:o}; a keyring must be 0600 (run: chmod 600 {})",
                path.display()
            )));
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let file: KeyringFile =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a keyring file ({e})")))?;
        if file.format != KEYRING_FORMAT || file.version != 1 {
            return Err(bad(format!(
                "unsupported format {} v{}",
                file.format, file.version
            )));
        }
        let mut keks = Vec::new();
        for k in file.keys {
            let raw = Zeroizing::new(
                B64.decode(&k.material)
                    .map_err(|_| bad(format!("KEK v{} is not base64", k.version)))?,
            );
            let material: [u8; 32] = raw
                .as_slice()
                .try_into()
                .map_err(|_| bad(format!("KEK v{} is not 32 bytes", k.version)))?;
            keks.push(Kek {
                version: k.version,
                created_at: k.created_at,
                material: Zeroizing::new(material),
            });
        }
        if !keks.iter().any(|k| k.version == file.primary) {
            return Err(bad(format!("primary KEK v{} missing", file.primary)));
        }
        let raw = Zeroizing::new(
            B64.decode(&file.index_master)
                .map_err(|_| bad("index master is not base64".into()))?,
        );
        let index_master = Zeroizing::new(
            <[u8; 32]>::try_from(raw.as_slice())
                .map_err(|_| bad("index master is not 32 bytes".into()))?,
        );
        Ok(LocalKeyring {
            path: path.to_path_buf(),
            kek_id: file.kek_id,
            primary: file.primary,
            keks,
            index_master,
        })
    }

    fn to_json(&self) -> String {
        let file = KeyringFile {
            format: KEYRING_FORMAT.into(),
            version: 1,
            kek_id: self.kek_id.clone(),
            primary: self.primary,
            keys: self
                .keks
                .iter()
                .map(|k| KeyringEntry {
                    version: k.version,
                    created_at: k.created_at.clone(),
                    material: B64.encode(k.material.as_ref()),
                })
                .collect(),
            index_master: B64.encode(self.index_master.as_ref()),
        };
        serde_json::to_string_pretty(&file).expect("keyring serializes")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn primary_version(&self) -> u32 {
        self.primary
    }
    pub fn primary_created_at(&self) -> &str {
        self.keks
            .iter()
            .find(|k| k.version == self.primary)
            .map(|k| k.created_at.as_str())
            .unwrap_or("")
    }

    fn kek(&self, version: u32) -> Result<Cipher, KmsError> {
        let k = self
            .keks
            .iter()
            .find(|k| k.version == version)
            .ok_or_else(|| KmsError::KeyNotFound {
                backend: self.describe(),
                kek_id: self.kek_id.clone(),
                version,
            })?;
        Ok(DataKey::from_parts(format!("{}/v{}", self.kek_id, version), *k.material).cipher())
    }
}

impl Kms for LocalKeyring {
    fn describe(&self) -> String {
        format!("local keyring {}", self.path.display())
    }
    fn kek_id(&self) -> &str {
        &self.kek_id
    }
    fn wrap<'a>(&'a self, dek: &'a DataKey) -> BoxFuture<'a, Result<WrappedKey, KmsError>> {
        Box::pin(async move {
            let cipher = self.kek(self.primary)?;
            let ciphertext =
                cipher.seal(dek.expose(), &dek_aad(&self.kek_id, self.primary, dek.id()));
            Ok(WrappedKey {
                kek_id: self.kek_id.clone(),
                kek_version: self.primary,
                ciphertext,
            })
        })
    }
    fn index_key<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<IndexKey, KmsError>> {
        Box::pin(async move {
            let label = aad(&[b"holdfast.blind-index.v1", tenant.as_bytes()]);
            Ok(Zeroizing::new(crate::crypto::hmac_sha256(
                &self.index_master,
                &label,
            )))
        })
    }
    fn unwrap_key<'a>(
        &'a self,
        dek_id: &'a str,
        wrapped: &'a WrappedKey,
    ) -> BoxFuture<'a, Result<DataKey, KmsError>> {
        Box::pin(async move {
            let invalid = || KmsError::InvalidCiphertext {
                dek_id: dek_id.to_string(),
                kek_id: wrapped.kek_id.clone(),
                version: wrapped.kek_version,
            };
            if wrapped.kek_id != self.kek_id {
                return Err(KmsError::KeyNotFound {
                    backend: self.describe(),
                    kek_id: wrapped.kek_id.clone(),
                    version: wrapped.kek_version,
                });
            }
            let cipher = self.kek(wrapped.kek_version)?;
            let plain = Zeroizing::new(
                cipher
                    .open(
                        &wrapped.ciphertext,
                        &dek_aad(&self.kek_id, wrapped.kek_version, dek_id),
                        &|| dek_id.to_string(),
                    )
                    .map_err(|_| invalid())?,
            );
            let bytes: [u8; 32] = plain.as_slice().try_into().map_err(|_| invalid())?;
            Ok(DataKey::from_parts(dek_id.to_string(), bytes))
        })
    }
}

#[cfg(test)]
pub(crate) mod contract {
    //! The contract every [`Kms`] backend must pass.
    use super::*;

    pub(crate) async fn round_trip(kms: &dyn Kms) {
        let dek = DataKey::generate();
        let w = kms.wrap(&dek).await.unwrap();
        let back = kms.unwrap_key(dek.id(), &w).await.unwrap();
        assert_eq!(back.expose(), dek.expose());
        assert_eq!(back.id(), dek.id());
    }

    pub(crate) async fn rejects_altered_or_moved(kms: &dyn Kms) {
        let dek = DataKey::generate();
        let w = kms.wrap(&dek).await.unwrap();
        assert!(matches!(
            kms.unwrap_key("dek-other", &w).await,
            Err(KmsError::InvalidCiphertext { .. })
        ));
        let mut bad = w.clone();
        let n = bad.ciphertext.len();
        bad.ciphertext[n - 1] ^= 0x01;
        assert!(matches!(
            kms.unwrap_key(dek.id(), &bad).await,
            Err(KmsError::InvalidCiphertext { .. })
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn local_keyring_contract() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/keyring.json");
        let ring = LocalKeyring::create(&path, "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        block(contract::round_trip(&ring));
        block(contract::rejects_altered_or_moved(&ring));
        // a reloaded keyring unwraps what the first one wrapped
        let dek = DataKey::generate();
        let w = block(ring.wrap(&dek)).unwrap();
        let again = LocalKeyring::load(&path).unwrap();
        assert_eq!(
            block(again.unwrap_key(dek.id(), &w)).unwrap().expose(),
            dek.expose()
        );
        assert!(
            LocalKeyring::create(&path, "x").is_err(),
            "never overwrites a keyring"
        );
    }

    #[test]
    fn refuses_world_readable_keyring() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        LocalKeyring::create(&path, "2026-01-01T00:00:00Z").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = LocalKeyring::load(&path).unwrap_err().to_string();
        assert!(err.contains("0600"), "{err}");
    }

    #[test]
    fn debug_and_errors_hold_no_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let ring = LocalKeyring::create(&path, "2026-01-01T00:00:00Z").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        let material = file["keys"][0]["material"].as_str().unwrap().to_string();
        assert!(!format!("{ring:?}").contains(&material));
    }
}
