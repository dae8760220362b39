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
    #[error(
        "{backend}: KEK `{kek_id}` v{version} is retired (it unwraps from v{min} on); `holdfast keys status` shows what is still wrapped under which version"
    )]
    Retired {
        backend: String,
        kek_id: String,
        version: u32,
        min: u32,
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
    /// A call to a tenant's own key service (BYOK) failed.
    #[error("tenant `{tenant}`'s own key: {source}")]
    Tenant {
        tenant: String,
        #[source]
        source: Box<KmsError>,
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
    /// The KEK's versions as the backend reports them.
    fn info(&self) -> BoxFuture<'_, Result<KekInfo, KmsError>>;
    /// Makes a new KEK version (made at `now`, where the backend does not keep time itself)
    /// the one new wraps use; returns its number.
    fn rotate(&self, now: chrono::DateTime<chrono::Utc>) -> BoxFuture<'_, Result<u32, KmsError>>;
    /// Wraps each `(dek id, wrapped key)` again under the newest KEK version, in order. A
    /// remote backend does it server-side (holdfast never sees the DEKs); the local keyring
    /// unwraps and wraps in memory.
    fn rewrap<'a>(
        &'a self,
        keys: &'a [(&'a str, &'a WrappedKey)],
    ) -> BoxFuture<'a, Result<Vec<WrappedKey>, KmsError>>;
    /// Stops unwrapping under every version up to `through` (below the primary one).
    fn retire(&self, through: u32) -> BoxFuture<'_, Result<(), KmsError>>;
    /// The calls made so far, where this `Kms` counts them ([`Counting`]).
    fn calls(&self) -> KmsCalls {
        KmsCalls::default()
    }
    /// The own key service of `tenant`, when the store binds it to one ([`Tenanted`]): new
    /// DEKs of that tenant's records are wrapped there.
    fn tenant(&self, _tenant: &str) -> Option<std::sync::Arc<dyn Kms>> {
        None
    }
    /// Wraps `dek` under the newest version of the KEK whose id is `kek_id` where this `Kms`
    /// holds it (a tenant's own, [`Tenanted`]), else as [`Kms::wrap`] does.
    fn wrap_under<'a>(
        &'a self,
        dek: &'a DataKey,
        _kek_id: &'a str,
    ) -> BoxFuture<'a, Result<WrappedKey, KmsError>> {
        self.wrap(dek)
    }
    /// Every tenant with a key service of its own, by tenant id.
    fn tenants(&self) -> Vec<(String, std::sync::Arc<dyn Kms>)> {
        Vec::new()
    }
}

impl KmsError {
    /// The error itself, under any tenant naming ([`KmsError::Tenant`]).
    pub fn root(&self) -> &KmsError {
        match self {
            KmsError::Tenant { source, .. } => source.root(),
            e => e,
        }
    }

    /// The tenant whose own key service failed, if it was one.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            KmsError::Tenant { tenant, .. } => Some(tenant),
            _ => None,
        }
    }
}

/// One version of a KEK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KekVersion {
    pub version: u32,
    /// When the backend made it (`None`: the backend does not say).
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A KEK as its backend reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KekInfo {
    pub kek_id: String,
    pub backend: String,
    /// The version new wraps use.
    pub primary: u32,
    /// The oldest version the backend still unwraps under.
    pub min_decryption_version: u32,
    pub versions: Vec<KekVersion>,
}

impl KekInfo {
    /// When the primary version was made, if the backend says.
    pub fn primary_created_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.versions
            .iter()
            .find(|v| v.version == self.primary)
            .and_then(|v| v.created_at)
    }
}

/// A tenant's blind-index key; zeroized on drop.
pub type IndexKey = Zeroizing<[u8; 32]>;

/// Refuses a tenant's own key service (`own`) the blind-index key of another tenant.
fn own_tenant(kms: &dyn Kms, own: Option<&str>, asked: &str) -> Result<(), KmsError> {
    match own {
        Some(t) if t != asked => Err(KmsError::Backend {
            backend: kms.describe(),
            key: kms.kek_id().to_string(),
            problem: format!("the key of tenant `{t}` was asked for tenant `{asked}`'s index key"),
        }),
        _ => Ok(()),
    }
}

/// A tenant's blind-index key from a backend's index secret (every backend derives alike).
fn derive_index_key(secret: &[u8; 32], tenant: &str) -> IndexKey {
    let label = aad(&[b"holdfast.blind-index.v1", tenant.as_bytes()]);
    Zeroizing::new(crate::crypto::hmac_sha256(secret, &label))
}

pub mod aws;
mod forward;
pub(crate) use forward::forward;
mod caching;
mod counting;
pub use caching::Caching;
mod local;
pub use counting::{Counting, KmsCalls};
mod tenants;
pub mod transit;
pub use local::LocalKeyring;
pub use tenants::{IndexFrom, Tenanted, Unavailable};

mod format;
pub use format::{IndexSecret, WrappedKeyV1};

#[cfg(test)]
pub(crate) mod contract;

#[cfg(test)]
mod tests;
