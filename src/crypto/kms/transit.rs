//! The OpenBao / HashiCorp Vault Transit backend: the KEK never leaves the server; holdfast
//! asks it to wrap (`encrypt`) and unwrap (`decrypt`) DEKs and to sign store heads.
//!
//! - **Binding.** The KEK is a *derived* Transit key (`derived=true`): every call carries a
//!   `context`, `holdfast.dek.v1/<dek-id>`, so a wrapped DEK opens only under the DEK id it was
//!   wrapped for (a manifest's DEK moved to another file fails), and `transit/rewrap` with the
//!   same context works server-side, the DEK never leaving OpenBao. A tenant's own key (BYOK,
//!   [`Transit::for_tenant`]) binds the tenant too: `holdfast.dek.v1/tenant/<tenant>/<dek-id>`.
//! - **Versions.** Transit ciphertexts read `vault:v<N>:…`; `N` is the `WrappedKey`'s KEK
//!   version, checked against the prefix on unwrap. The KEK id is `transit:<mount>/<key>`.
//! - **Blind-index keys** derive (as the local keyring's do) from a 32-byte index secret the
//!   store keeps wrapped like a DEK (`keys/index/v<n>.json`, see `crate::store`): the backend
//!   needs only wrap/unwrap. [`Transit::with_index_secret`] hands it over; it is unwrapped once.
//! - **Head signatures** use a Transit `ed25519` key `<key>-head-signing` (created on first
//!   sign if the token may): the signing key never leaves OpenBao either, and the signature
//!   is plain Ed25519, checked with the public key alone.
//!
//! The token comes from the caller (only `cli` reads the environment); its `Debug` is redacted
//! and no message carries it or any key material. (The HTTP library's own buffers are not
//! zeroized: a limit of the stack, not of this module.)

mod http;

use super::{IndexKey, IndexSecret, KekInfo, Kms, KmsError, PublicKey, Signed, WrappedKey};
use crate::crypto::DataKey;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use zeroize::Zeroizing;

pub(crate) use http::Failure;

/// The context prefix every wrapped DEK is bound with (`<prefix>/<dek-id>`).
pub const CONTEXT_PREFIX: &str = "holdfast.dek.v1";
/// The DEK id of a store's blind-index secret (its Transit context is
/// `holdfast.dek.v1/holdfast-index-secret`).
pub const INDEX_SECRET_ID: &str = "holdfast-index-secret";

/// A Vault/OpenBao token. Never printed: its `Debug` is redacted; zeroized on drop.
#[derive(Clone)]
pub struct Token(Zeroizing<String>);

impl Token {
    pub fn new(token: String) -> Self {
        Token(Zeroizing::new(token))
    }
    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// AppRole credentials (`BAO_ROLE_ID` and `BAO_SECRET_ID`, read by `cli`): a machine logs in
/// with them for a token instead of holding one.
#[derive(Debug, Clone)]
pub struct AppRole {
    pub role_id: String,
    pub secret_id: Token,
    /// The auth method's mount path (default `approle`).
    pub mount: String,
}

/// Where the Transit KEK is and how to reach it.
#[derive(Debug, Clone)]
pub struct TransitConfig {
    /// `https://host:8200` (plain `http` only to a loopback address).
    pub address: String,
    /// The secrets engine's mount path (default `transit`).
    pub mount: String,
    /// The Transit key name (a derived `aes256-gcm96` key).
    pub key: String,
    /// Vault Enterprise / OpenBao namespace (`X-Vault-Namespace`).
    pub namespace: Option<String>,
    /// PEM file of the CA that signed the server's certificate (added to the system roots).
    pub ca_file: Option<PathBuf>,
    /// The token (empty when `approle` logs in instead).
    pub token: Token,
    /// AppRole credentials: the first call logs in (`auth/<mount>/login`) for a token.
    pub approle: Option<AppRole>,
    /// Per request (connect and response).
    pub timeout: Duration,
    /// Retries after the first attempt on 429, 5xx and connection errors.
    pub retries: u32,
    /// The first retry's delay; each next one doubles (with jitter).
    pub backoff: Duration,
}

impl TransitConfig {
    /// A configuration with the defaults: 10 s timeout, 4 retries from 200 ms.
    pub fn new(address: String, mount: String, key: String, token: Token) -> Self {
        TransitConfig {
            address,
            mount,
            key,
            namespace: None,
            ca_file: None,
            token,
            approle: None,
            timeout: Duration::from_secs(10),
            retries: 4,
            backoff: Duration::from_millis(200),
        }
    }

    /// Whether no token was given (AppRole logs in for one).
    pub fn token_is_empty(&self) -> bool {
        self.token.expose().is_empty()
    }

    /// The KEK id a store bound to this key records: `transit:<mount>/<key>`.
    pub fn kek_id(&self) -> String {
        kek_id(&self.mount, &self.key)
    }
}

/// `transit:<mount>/<key>`.
pub fn kek_id(mount: &str, key: &str) -> String {
    format!("transit:{}/{key}", mount.trim_matches('/'))
}

/// The mount and key of a `transit:<mount>/<key>` KEK id (Transit key names hold no `/`).
pub fn parse_kek_id(kek_id: &str) -> Option<(&str, &str)> {
    let rest = kek_id.strip_prefix("transit:")?;
    let (mount, key) = rest.rsplit_once('/')?;
    (!mount.is_empty() && !key.is_empty()).then_some((mount, key))
}

/// The Transit backend (see the module docs).
pub struct Transit {
    http: http::Client,
    kek_id: String,
    key: String,
    signing: String,
    index_secret: Option<IndexSecret>,
    index: tokio::sync::OnceCell<Zeroizing<[u8; 32]>>,
    public_keys: std::sync::Mutex<Vec<(u32, PublicKey)>>,
    /// The tenant this key belongs to (BYOK), bound into every context.
    tenant: Option<String>,
}

impl std::fmt::Debug for Transit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Transit({}, {})", self.http.backend(), self.kek_id)
    }
}

fn b64_context(dek_id: &str) -> String {
    B64.encode(format!("{CONTEXT_PREFIX}/{dek_id}"))
}

/// The version `N` of a `vault:vN:…` string and what follows it.
pub(crate) fn split_version(s: &str) -> Option<(u32, &str)> {
    let rest = s.strip_prefix("vault:v")?;
    let (n, body) = rest.split_once(':')?;
    if n.starts_with('0') || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((n.parse().ok()?, body))
}

impl Transit {
    /// A client for `cfg` (reads the CA file; makes no request).
    pub fn new(cfg: &TransitConfig) -> Result<Self, KmsError> {
        let http = http::Client::new(cfg)?;
        Ok(Transit {
            http,
            kek_id: cfg.kek_id(),
            key: cfg.key.clone(),
            signing: format!("{}-head-signing", cfg.key),
            index_secret: None,
            index: tokio::sync::OnceCell::new(),
            public_keys: std::sync::Mutex::new(Vec::new()),
            tenant: None,
        })
    }

    /// This key as tenant `tenant`'s own (BYOK): every context names the tenant, and it gives
    /// that tenant's blind-index key only.
    pub fn for_tenant(mut self, tenant: &str) -> Self {
        self.tenant = Some(tenant.to_string());
        self
    }

    /// The base64 context a DEK is wrapped under (see the module docs).
    pub(crate) fn context(&self, dek_id: &str) -> String {
        match &self.tenant {
            Some(t) => B64.encode(format!("{CONTEXT_PREFIX}/tenant/{t}/{dek_id}")),
            None => b64_context(dek_id),
        }
    }

    /// The store's wrapped blind-index secret, unwrapped on the first [`Kms::index_key`].
    pub fn with_index_secret(mut self, secret: IndexSecret) -> Self {
        self.index_secret = Some(secret);
        self
    }

    /// Checks that the KEK exists and is a derived encryption key (what `init` binds a store
    /// to). Needs `read` on `<mount>/keys/<key>`.
    pub async fn check_key(&self) -> Result<(), KmsError> {
        let path = format!("keys/{}", self.key);
        let data = match self.http.get(&path).await {
            Ok(v) => v,
            Err(Failure::NotFound) => return Err(self.no_such_key(&self.key)),
            Err(f) => return Err(self.http.error(f, &self.key, &path).await),
        };
        let derived = data["data"]["derived"].as_bool() == Some(true);
        let encrypts = data["data"]["supports_encryption"].as_bool() == Some(true);
        if !(derived && encrypts) {
            return Err(KmsError::Backend {
                backend: self.http.backend(),
                key: self.key.clone(),
                problem: format!(
                    "key `{}` must be a derived encryption key (create it with `bao write -f {}/keys/{} derived=true`)",
                    self.key,
                    self.http.mount(),
                    self.key
                ),
            });
        }
        Ok(())
    }

    fn no_such_key(&self, key: &str) -> KmsError {
        KmsError::NoSuchKey {
            backend: self.http.backend(),
            key: key.to_string(),
            hint: match &self.tenant {
                // a new key of the same name would open nothing stored under the old one
                Some(t) => format!(
                    "it is tenant {t}'s own key: records under it stay unreadable, and the tenant's new events wait in landing, until it is restored from its backup (`bao write {}/restore/{key} backup=...`)",
                    self.http.mount()
                ),
                None => format!(
                    "create it (`bao write -f {}/keys/{key} derived=true`) or fix `key` in [kms]",
                    self.http.mount()
                ),
            },
        }
    }

    /// A failed `decrypt`: a ciphertext Transit refuses (altered, another context, a version
    /// it does not hold) is `InvalidCiphertext`; a key it does not have is `NoSuchKey`.
    async fn unwrap_error(&self, f: Failure, dek_id: &str, w: &WrappedKey) -> KmsError {
        match f {
            Failure::Status {
                status: 400,
                ref message,
            } if message.contains("key not found") => self.no_such_key(&self.key),
            Failure::Status {
                status: 400,
                ref message,
            } if message.contains("disallowed by policy") => KmsError::Retired {
                backend: self.http.backend(),
                kek_id: self.kek_id.clone(),
                version: w.kek_version,
                min: match Box::pin(self.key_info()).await {
                    Ok(i) => i.min_decryption_version,
                    Err(_) => w.kek_version + 1,
                },
            },
            Failure::Status { status: 400, .. } => w.invalid(dek_id),
            f => {
                let path = format!("decrypt/{}", self.key);
                self.http.error(f, &self.key, &path).await
            }
        }
    }

    async fn wrap_dek(&self, dek: &DataKey) -> Result<WrappedKey, KmsError> {
        if self.tenant.is_some() {
            // `encrypt` creates a missing key when the token may (upsert): a tenant's revoked
            // key must not come back as a new key under the same name
            self.check_key().await?;
        }
        let path = format!("encrypt/{}", self.key);
        let plaintext = Zeroizing::new(B64.encode(dek.expose()));
        let body = Zeroizing::new(
            serde_json::to_vec(&json!({
                "plaintext": plaintext.as_str(),
                "context": self.context(dek.id()),
            }))
            .expect("serializes"),
        );
        let data = match self.http.post(&path, &body).await {
            Ok(v) => v,
            Err(f) => return Err(self.http.error(f, &self.key, &path).await),
        };
        let ciphertext = data["data"]["ciphertext"].as_str().unwrap_or_default();
        let (version, _) = split_version(ciphertext).ok_or_else(|| KmsError::Backend {
            backend: self.http.backend(),
            key: self.key.clone(),
            problem: "encrypt answered without a `vault:v<N>:` ciphertext".into(),
        })?;
        Ok(WrappedKey {
            kek_id: self.kek_id.clone(),
            kek_version: version,
            ciphertext: ciphertext.as_bytes().to_vec(),
        })
    }

    async fn unwrap_dek(&self, dek_id: &str, w: &WrappedKey) -> Result<DataKey, KmsError> {
        let invalid = || w.invalid(dek_id);
        w.check_kek(self, &self.kek_id)?;
        let text = std::str::from_utf8(&w.ciphertext).map_err(|_| invalid())?;
        match split_version(text) {
            Some((v, _)) if v == w.kek_version => {}
            _ => return Err(invalid()),
        }
        let path = format!("decrypt/{}", self.key);
        let body = serde_json::to_vec(&json!({
            "ciphertext": text,
            "context": self.context(dek_id),
        }))
        .expect("serializes");
        let data = match self.http.post(&path, &body).await {
            Ok(v) => v,
            Err(f) => return Err(self.unwrap_error(f, dek_id, w).await),
        };
        let mut data = data;
        let mut field = Zeroizing::new(match data["data"]["plaintext"].take() {
            Value::String(s) => s,
            _ => return Err(invalid()),
        });
        let raw = Zeroizing::new(B64.decode(field.as_bytes()).map_err(|_| invalid())?);
        zeroize::Zeroize::zeroize(&mut *field);
        let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| invalid())?;
        Ok(DataKey::from_parts(dek_id.to_string(), bytes))
    }

    async fn index_secret(&self) -> Result<&Zeroizing<[u8; 32]>, KmsError> {
        self.index
            .get_or_try_init(|| async {
                let w = self.index_secret.as_ref().ok_or_else(|| KmsError::Backend {
                    backend: self.describe(),
                    key: self.key.clone(),
                    problem: "the store holds no wrapped index secret (keys/index/); it is written at `holdfast init`".into(),
                })?;
                let dek = self.unwrap_dek(&w.secret_id, &w.wrapped).await?;
                Ok(Zeroizing::new(*dek.expose()))
            })
            .await
    }
}

mod keys;
mod sign;

impl Kms for Transit {
    fn describe(&self) -> String {
        format!("{} key `{}`", self.http.backend(), self.key)
    }
    fn kek_id(&self) -> &str {
        &self.kek_id
    }
    fn wrap<'a>(&'a self, dek: &'a DataKey) -> BoxFuture<'a, Result<WrappedKey, KmsError>> {
        Box::pin(self.wrap_dek(dek))
    }
    fn unwrap_key<'a>(
        &'a self,
        dek_id: &'a str,
        wrapped: &'a WrappedKey,
    ) -> BoxFuture<'a, Result<DataKey, KmsError>> {
        Box::pin(self.unwrap_dek(dek_id, wrapped))
    }
    fn index_key<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<IndexKey, KmsError>> {
        Box::pin(async move {
            super::own_tenant(self, self.tenant.as_deref(), tenant)?;
            let secret = self.index_secret().await?;
            Ok(super::derive_index_key(secret, tenant))
        })
    }
    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<Signed, KmsError>> {
        Box::pin(self.sign_message(message))
    }
    fn signing_key(&self) -> BoxFuture<'_, Result<Option<PublicKey>, KmsError>> {
        Box::pin(self.current_signing_key())
    }
    fn info(&self) -> BoxFuture<'_, Result<KekInfo, KmsError>> {
        Box::pin(self.key_info())
    }
    fn rotate(&self, _now: chrono::DateTime<chrono::Utc>) -> BoxFuture<'_, Result<u32, KmsError>> {
        Box::pin(self.rotate_key())
    }
    fn retire(&self, through: u32) -> BoxFuture<'_, Result<(), KmsError>> {
        Box::pin(self.retire_through(through))
    }
    fn rewrap<'a>(
        &'a self,
        keys: &'a [(&'a str, &'a WrappedKey)],
    ) -> BoxFuture<'a, Result<Vec<WrappedKey>, KmsError>> {
        Box::pin(self.rewrap_keys(keys))
    }
}

#[cfg(test)]
mod tests;
