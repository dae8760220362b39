//! Key-encryption keys. [`Kms`] wraps and unwraps DEKs; [`LocalKeyring`] is the embedded
//! default: a 0600 JSON file outside the store holding versioned AES-256 KEKs. [`transit`]
//! keeps the KEK in OpenBao/Vault Transit, [`aws`] in AWS KMS.
//!
//! Every backend guarantees: `unwrap(wrap(dek)) == dek`; a wrapped key altered, or presented
//! under another DEK id or KEK, fails with [`KmsError::InvalidCiphertext`] (never wrong bytes);
//! key material is never logged or put in an error. Every backend also signs store heads with
//! an Ed25519 key that never enters the store ([`Kms::sign`]); anyone checks a signature with
//! the public key alone ([`PublicKey::verify`]).

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
    #[error("{backend} is unreachable after {attempts} attempt(s) ({detail}); {hint}")]
    Unreachable {
        backend: String,
        detail: String,
        attempts: u32,
        /// What to check (the backend's address settings).
        hint: String,
    },
    #[error(
        "{backend} refused the token (403 on {path}, and the token cannot look itself up): it is wrong, expired or revoked; set a valid BAO_TOKEN or VAULT_TOKEN"
    )]
    BadToken { backend: String, path: String },
    #[error("{backend}: permission denied on {path} (key `{key}`): {hint}")]
    PermissionDenied {
        backend: String,
        key: String,
        /// The call refused (a Transit path, an AWS KMS action).
        path: String,
        /// Whose policy to change, and how.
        hint: String,
    },
    #[error("{backend} refused the credentials ({detail}); {hint}")]
    BadCredentials {
        backend: String,
        detail: String,
        /// Where the credentials come from.
        hint: String,
    },
    #[error("{backend}: key `{key}` is {state}; {hint}")]
    KeyDisabled {
        backend: String,
        key: String,
        /// The key's state as the backend names it (`Disabled`, `PendingDeletion`, …).
        state: String,
        hint: String,
    },
    #[error("{backend}: key `{key}` does not exist or was deleted; {hint}")]
    NoSuchKey {
        backend: String,
        key: String,
        hint: String,
    },
    #[error("{backend}: still throttled after {attempts} attempts on key `{key}`; {hint}")]
    Throttled {
        backend: String,
        key: String,
        attempts: u32,
        /// Which limit to raise.
        hint: String,
    },
    #[error("{backend}, key `{key}`: {problem}")]
    Backend {
        backend: String,
        key: String,
        problem: String,
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

impl WrappedKey {
    /// The error for this key when it does not open as `dek_id`'s.
    pub(crate) fn invalid(&self, dek_id: &str) -> KmsError {
        KmsError::InvalidCiphertext {
            dek_id: dek_id.to_string(),
            kek_id: self.kek_id.clone(),
            version: self.kek_version,
        }
    }

    /// Refuses a key wrapped by another KEK than `kek_id`, the one `backend` holds.
    pub(crate) fn check_kek(&self, backend: &dyn Kms, kek_id: &str) -> Result<(), KmsError> {
        if self.kek_id == kek_id {
            return Ok(());
        }
        Err(KmsError::KeyNotFound {
            backend: backend.describe(),
            kek_id: self.kek_id.clone(),
            version: self.kek_version,
        })
    }
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

/// An Ed25519 public key that checks store heads; safe to store anywhere.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl PublicKey {
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    pub fn from_base64(s: &str) -> Option<Self> {
        let raw = B64.decode(s).ok()?;
        Some(PublicKey(raw.as_slice().try_into().ok()?))
    }

    /// `ed25519:` and the first 16 bytes of the key's SHA-256, in hex: short enough to publish.
    pub fn fingerprint(&self) -> String {
        format!(
            "ed25519:{}",
            hex::encode(&crate::crypto::sha256(&self.0)[..16])
        )
    }

    /// Whether `signature` is this key's signature of `message` (strict Ed25519 checks).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        key.verify_strict(message, &sig).is_ok()
    }
}

/// A signature and the public key that checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub public_key: PublicKey,
    pub signature: Vec<u8>,
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
    /// Signs `message` with the backend's Ed25519 head-signing key (creating that key the
    /// first time, where the backend allows it).
    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<Signed, KmsError>>;
    /// The head-signing public key; `None` while the backend has none yet (never creates it).
    fn signing_key(&self) -> BoxFuture<'_, Result<Option<PublicKey>, KmsError>>;
}

/// A tenant's blind-index key; zeroized on drop.
pub type IndexKey = Zeroizing<[u8; 32]>;

/// A tenant's blind-index key from a backend's index secret (every backend derives alike).
fn derive_index_key(secret: &[u8; 32], tenant: &str) -> IndexKey {
    let label = aad(&[b"holdfast.blind-index.v1", tenant.as_bytes()]);
    Zeroizing::new(crate::crypto::hmac_sha256(secret, &label))
}

pub mod aws;
pub mod transit;

mod format;
pub use format::{IndexSecret, WrappedKeyV1};
use format::{KeyringEntry, Ring};

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
    /// The head-signing key (zeroized on drop); `None` for a version-1 file until first use.
    signing: std::sync::Mutex<Option<ed25519_dalek::SigningKey>>,
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

#[allow(clippy::disallowed_methods)] // the keyring file lives outside any store
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
            signing: std::sync::Mutex::new(Some(new_signing_key())),
        };
        let text = ring.to_json();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.write_all(&text).map_err(io)?;
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
        let mut file = read_file(path)?;
        let mut keks = Vec::new();
        for k in &file.keys {
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
                created_at: k.created_at.clone(),
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
        let signing = file
            .signing_key
            .as_deref()
            .map(|s| {
                signing_key_from(s)
                    .ok_or_else(|| bad("signing key is not a base64 32-byte seed".into()))
            })
            .transpose()?;
        file.zeroize();
        Ok(LocalKeyring {
            path: path.to_path_buf(),
            kek_id: file.kek_id,
            primary: file.primary,
            keks,
            index_master,
            signing: std::sync::Mutex::new(signing),
        })
    }

    fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let signing_key = self
            .signing
            .lock()
            .expect("signing key lock")
            .as_ref()
            .map(|k| B64.encode(k.as_bytes()));
        format::encode(Ring {
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
            signing_key,
        })
    }

    /// The signing key, adding one to a version-1 keyring file first. The file is rewritten
    /// under an exclusive `flock` (re-read inside it, so two processes upgrading at once agree
    /// on one key), through a 0600 temporary file in the same directory, fsync'd and renamed
    /// over the old one, then the directory is fsync'd: a crash leaves the old or the new file,
    /// never a mix. Chosen over refusing: a store must not stop committing because its
    /// keyring predates head signing, and the upgrade adds a key without touching the KEKs.
    fn signing_key_or_create(&self) -> Result<ed25519_dalek::SigningKey, KmsError> {
        let mut slot = self.signing.lock().expect("signing key lock");
        if let Some(k) = slot.as_ref() {
            return Ok(k.clone());
        }
        let key = upgrade_file(&self.path)?;
        *slot = Some(key.clone());
        Ok(key)
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

fn new_signing_key() -> ed25519_dalek::SigningKey {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(seed.as_mut());
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

fn signing_key_from(b64: &str) -> Option<ed25519_dalek::SigningKey> {
    let raw = Zeroizing::new(B64.decode(b64).ok()?);
    let seed = Zeroizing::new(<[u8; 32]>::try_from(raw.as_slice()).ok()?);
    Some(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// Reads and checks a keyring file (versions 1 and 2).
#[allow(clippy::disallowed_methods)] // the keyring file lives outside any store
fn read_file(path: &Path) -> Result<Ring, KmsError> {
    let bad = |problem: String| KmsError::Keyring {
        path: path.to_path_buf(),
        problem,
    };
    let text = Zeroizing::new(std::fs::read(path).map_err(|source| KmsError::KeyringIo {
        path: path.to_path_buf(),
        source,
    })?);
    format::decode(&text).map_err(|e| bad(format!("not a keyring file this holdfast reads: {e}")))
}

/// Adds a signing key to the keyring file at `path` (see `signing_key_or_create`); returns
/// the key the file holds afterwards (another process's, if it upgraded first).
#[allow(clippy::disallowed_methods)] // the keyring file lives outside any store
fn upgrade_file(path: &Path) -> Result<ed25519_dalek::SigningKey, KmsError> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| KmsError::KeyringIo {
        path: path.to_path_buf(),
        source,
    };
    let guard = std::fs::File::open(path).map_err(io)?;
    // SAFETY: flock on a file descriptor we own; released when `guard` closes.
    if unsafe { libc::flock(guard.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    let mut file = read_file(path)?;
    if let Some(k) = file.signing_key.as_deref() {
        let key = signing_key_from(k);
        file.zeroize();
        return key.ok_or_else(|| KmsError::Keyring {
            path: path.to_path_buf(),
            problem: "signing key is not a base64 32-byte seed".into(),
        });
    }
    let key = new_signing_key();
    file.signing_key = Some(B64.encode(key.as_bytes()));
    let text = format::encode(file);
    let tmp = path.with_extension(format!("upgrade-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    let written = f
        .write_all(&text)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    drop(guard);
    Ok(key)
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
        Box::pin(async move { Ok(derive_index_key(&self.index_master, tenant)) })
    }
    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<Signed, KmsError>> {
        Box::pin(async move {
            use ed25519_dalek::Signer;
            let key = self.signing_key_or_create()?;
            Ok(Signed {
                public_key: PublicKey(key.verifying_key().to_bytes()),
                signature: key.sign(message).to_bytes().to_vec(),
            })
        })
    }
    fn signing_key(&self) -> BoxFuture<'_, Result<Option<PublicKey>, KmsError>> {
        Box::pin(async move {
            Ok(self
                .signing
                .lock()
                .expect("signing key lock")
                .as_ref()
                .map(|k| PublicKey(k.verifying_key().to_bytes())))
        })
    }
    fn unwrap_key<'a>(
        &'a self,
        dek_id: &'a str,
        wrapped: &'a WrappedKey,
    ) -> BoxFuture<'a, Result<DataKey, KmsError>> {
        Box::pin(async move {
            let invalid = || wrapped.invalid(dek_id);
            wrapped.check_kek(self, &self.kek_id)?;
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
pub(crate) mod contract;

#[cfg(test)]
mod tests;
