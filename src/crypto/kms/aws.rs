//! The AWS KMS backend: the KEK is a symmetric KMS key that never leaves AWS; holdfast asks
//! KMS to wrap (`Encrypt`) and unwrap (`Decrypt`) the DEKs it generates, to move them to
//! another key (`ReEncrypt`, the DEK never leaving KMS) and to rotate the key's material
//! (`RotateKeyOnDemand`).
//!
//! - **Binding.** Every call carries the EncryptionContext `{"holdfast": "dek.v1",
//!   "dek_id": <id>}` ([`context`]): KMS authenticates it with the ciphertext, so a wrapped
//!   DEK opens only under the DEK id it was wrapped for, and CloudTrail logs it with every
//!   call. `ReEncrypt` takes the same context on both sides. The trait's `wrap` gets no
//!   tenant yet; the tenant joins the context in [`context`] when it does.
//! - **Ids and versions.** The KEK id is the key ARN KMS reports (an alias is resolved once,
//!   by `DescribeKey`, when the backend opens, and new DEKs are wrapped under that ARN, so an
//!   alias moved later cannot silently move a store). AWS keeps a key's older backing
//!   material inside the key and never says which one a ciphertext used, so every wrapped
//!   DEK records KEK version 1, before and after rotation.
//! - **State.** Opening checks the key is an enabled `SYMMETRIC_DEFAULT` encryption key: a
//!   disabled key, or one pending deletion, is refused there (real KMS also refuses each
//!   call; moto 5.2.5 does not, so its tests see the state through `DescribeKey`).
//! - **Blind-index keys** derive, as on Transit, from a 32-byte secret the store keeps
//!   wrapped by this key (`keys/index/`): the backend needs only wrap and unwrap.
//! - **Head signatures** are not made in KMS (see [`AwsKms::with_head_signer`]): the store's
//!   heads are signed with the local keyring's Ed25519 key.
//!
//! Requests go through the AWS SDK (SigV4, the AWS credential chain, `AWS_ENDPOINT_URL`),
//! over hyper and rustls with ring, on a small runtime of the backend's own (see
//! [`Rt`]), with the SDK's standard retries (exponential backoff with jitter on throttling,
//! 5xx and connection errors), bounded by [`AwsKmsConfig::max_attempts`].
//!
//! Credentials are never held here: the SDK resolves them from the chain (or, in tests, from
//! [`AwsKmsConfig::credentials`]). The plaintext DEK travels to KMS in the SDK's request
//! buffer, which is not zeroized (a limit of the stack, as for Transit's HTTP client).

mod errors;

use super::{IndexKey, IndexSecret, KekInfo, Kms, KmsError, PublicKey, Signed, WrappedKey};
use crate::crypto::DataKey;
use aws_sdk_kms::primitives::Blob;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

pub use aws_sdk_kms::config::Credentials;

/// The EncryptionContext of the DEK `dek_id`: what KMS binds its ciphertext to.
pub(crate) fn context(dek_id: &str) -> HashMap<String, String> {
    HashMap::from([
        ("holdfast".to_string(), "dek.v1".to_string()),
        ("dek_id".to_string(), dek_id.to_string()),
    ])
}

/// The EncryptionContext of the DEK `dek_id` under a tenant's own key: the tenant too.
pub(crate) fn tenant_context(dek_id: &str, tenant: Option<&str>) -> HashMap<String, String> {
    let mut c = context(dek_id);
    if let Some(t) = tenant {
        c.insert("tenant".to_string(), t.to_string());
    }
    c
}

/// Where the KEK is and how to reach it.
#[derive(Debug, Clone)]
pub struct AwsKmsConfig {
    /// The key id, key ARN, alias ARN or `alias/NAME`.
    pub key: String,
    /// The region; `None`: the key ARN's, else the SDK's (`AWS_REGION`, the profile).
    pub region: Option<String>,
    /// An endpoint; `None`: the SDK's (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_KMS`, else AWS).
    pub endpoint: Option<String>,
    /// Fixed credentials (tests); `None`, as the CLI always has it: the AWS credential chain.
    pub credentials: Option<Credentials>,
    /// Attempts per call, the first included (the SDK's standard retry mode).
    pub max_attempts: u32,
    /// The first retry's delay (the SDK doubles it, with jitter, up to 20 s).
    pub initial_backoff: Duration,
    /// Per attempt (connect and answer).
    pub attempt_timeout: Duration,
}

impl AwsKmsConfig {
    /// A configuration with the defaults: 5 attempts from 200 ms, 10 s per attempt.
    pub fn new(key: String) -> Self {
        AwsKmsConfig {
            key,
            region: None,
            endpoint: None,
            credentials: None,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            attempt_timeout: Duration::from_secs(10),
        }
    }

    /// The region asked for: the configured one, else the key ARN's.
    fn region(&self) -> Option<String> {
        self.region
            .clone()
            .or_else(|| arn_region(&self.key).map(str::to_string))
    }
}

/// The region of a KMS key or alias ARN (`arn:<partition>:kms:<region>:<account>:…`).
pub fn arn_region(key: &str) -> Option<&str> {
    let mut parts = key.splitn(6, ':');
    let (arn, _partition, service, region) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (arn == "arn" && service == "kms" && region_like(region)).then_some(region)
}

/// Whether `kek_id` is a KMS key ARN, the KEK id of a store bound to AWS KMS.
pub fn is_key_arn(kek_id: &str) -> bool {
    arn_region(kek_id).is_some()
        && kek_id
            .rsplit(':')
            .next()
            .is_some_and(|r| r.starts_with("key/"))
}

/// Whether `r` looks like an AWS region name (`eu-west-1`, `us-gov-east-1`).
pub fn region_like(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks that `key` names a KMS key the way KMS accepts: a key id (a UUID or a multi-Region
/// `mrk-…` id), `alias/NAME`, or a key or alias ARN.
pub fn check_key_name(key: &str) -> Result<(), String> {
    let hexish = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    let id_ok = |id: &str| {
        (id.len() == 36 && hexish(id))
            || id
                .strip_prefix("mrk-")
                .is_some_and(|h| h.len() == 32 && hexish(h))
    };
    let alias_ok = |a: &str| {
        a.strip_prefix("alias/").is_some_and(|n| {
            !n.is_empty()
                && n.len() <= 250
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b))
        })
    };
    if key.starts_with("arn:") {
        let resource = key.splitn(6, ':').nth(5).unwrap_or_default();
        let ok = arn_region(key).is_some()
            && (resource.strip_prefix("key/").is_some_and(id_ok) || alias_ok(resource));
        return if ok {
            Ok(())
        } else {
            Err(format!(
                "`{key}` is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID or …:alias/NAME)"
            ))
        };
    }
    if id_ok(key) || alias_ok(key) {
        Ok(())
    } else {
        Err(format!(
            "`{key}` is not a KMS key id, key ARN or alias/NAME"
        ))
    }
}

/// The backend's runtime, shut down without waiting when the backend goes (a runtime dropped
/// the ordinary way inside an async context panics). The SDK's calls run on it, so callers
/// wait on them from any executor (the batch's decode threads use
/// `futures::executor::block_on`, with no Tokio reactor), and the connection pool stays with
/// the runtime that opened its connections.
struct Rt(Option<tokio::runtime::Runtime>);

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Rt {
    async fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, String> {
        let rt = self.0.as_ref().expect("runtime until drop");
        rt.spawn(f)
            .await
            .map_err(|e| format!("the request task failed: {e}"))
    }
}

/// The AWS KMS backend (see the module docs).
pub struct AwsKms {
    client: aws_sdk_kms::Client,
    rt: Rt,
    /// The key as configured (an alias, an id or an ARN).
    key: String,
    /// The key ARN KMS reported: the KEK id.
    arn: String,
    region: String,
    endpoint: Option<String>,
    attempts: u32,
    index_secret: Option<IndexSecret>,
    index: tokio::sync::OnceCell<Zeroizing<[u8; 32]>>,
    signer: Option<Arc<dyn Kms>>,
    /// The tenant this key belongs to (BYOK), bound into every EncryptionContext.
    tenant: Option<String>,
}

impl std::fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AwsKms({}, {})", self.backend(), self.arn)
    }
}

impl AwsKms {
    /// Opens the backend: loads the SDK configuration (credential chain, region, endpoint)
    /// and resolves `cfg.key` with `DescribeKey`, refusing a key that is not an enabled
    /// symmetric encryption key. Needs `kms:DescribeKey`.
    pub async fn connect(cfg: &AwsKmsConfig) -> Result<Self, KmsError> {
        let early = |problem: String| KmsError::Backend {
            backend: "AWS KMS".into(),
            key: cfg.key.clone(),
            problem,
        };
        check_key_name(&cfg.key).map_err(early)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("holdfast-aws-kms")
            .enable_all()
            .build()
            .map_err(|e| early(format!("cannot start the SDK's runtime: {e}")))?;
        let rt = Rt(Some(rt));
        let sdk = rt.run(loader(cfg).load()).await.map_err(early)?;
        let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
            early("no AWS region: set `region` in [kms], AWS_REGION, or use a key ARN".into())
        })?;
        let mut kms = AwsKms {
            client: aws_sdk_kms::Client::new(&sdk),
            endpoint: sdk.endpoint_url().map(str::to_string),
            rt,
            key: cfg.key.clone(),
            arn: String::new(),
            region,
            attempts: cfg.max_attempts.max(1),
            index_secret: None,
            index: tokio::sync::OnceCell::new(),
            signer: None,
            tenant: None,
        };
        kms.arn = kms.describe_key().await?;
        Ok(kms)
    }

    /// The store's wrapped blind-index secret, unwrapped on the first [`Kms::index_key`].
    pub fn with_index_secret(mut self, secret: IndexSecret) -> Self {
        self.index_secret = Some(secret);
        self
    }

    /// This key as tenant `tenant`'s own (BYOK): every EncryptionContext names the tenant
    /// (`"tenant": <id>`), and it gives that tenant's blind-index key only.
    pub fn for_tenant(mut self, tenant: &str) -> Self {
        self.tenant = Some(tenant.to_string());
        self
    }

    fn context(&self, dek_id: &str) -> HashMap<String, String> {
        tenant_context(dek_id, self.tenant.as_deref())
    }

    /// The backend that signs store heads for this one. AWS KMS has Ed25519 signing keys
    /// (`ECC_NIST_EDWARDS25519`), but the emulator the tests run against (moto 5.2.5) does
    /// not, so holdfast does not sign in KMS yet: an AWS KMS store's heads are signed with
    /// the local keyring's Ed25519 key, which `init` creates beside the store's KEK binding
    /// and every command opens (`--keyring`, `HOLDFAST_KEYRING`).
    pub fn with_head_signer(mut self, signer: Arc<dyn Kms>) -> Self {
        self.signer = Some(signer);
        self
    }

    /// `AWS KMS (eu-west-1)`, with the endpoint when it is not AWS's own.
    fn backend(&self) -> String {
        match &self.endpoint {
            Some(e) => format!("AWS KMS ({}, endpoint {e})", self.region),
            None => format!("AWS KMS ({})", self.region),
        }
    }

    /// `DescribeKey`: the key's ARN, once the key is known to be usable.
    async fn describe_key(&self) -> Result<String, KmsError> {
        use aws_sdk_kms::types::{KeySpec, KeyState, KeyUsageType};
        let call = self.client.describe_key().key_id(&self.key).send();
        let out = self.call(call, "DescribeKey").await?;
        let bad = |problem: String| KmsError::Backend {
            backend: self.backend(),
            key: self.key.clone(),
            problem,
        };
        let meta = out
            .key_metadata()
            .ok_or_else(|| bad("DescribeKey answered without key metadata".into()))?;
        let arn = meta
            .arn()
            .ok_or_else(|| bad("DescribeKey answered without the key's ARN".into()))?;
        match meta.key_state() {
            Some(KeyState::Enabled) => {}
            state => {
                let state = state.map_or("in an unknown state".into(), |s| s.as_str().to_string());
                return Err(errors::disabled(self, &state));
            }
        }
        // KMS always names the usage; moto 5.2.5 leaves out the default (ENCRYPT_DECRYPT)
        let symmetric = meta.key_spec() == Some(&KeySpec::SymmetricDefault)
            && meta
                .key_usage()
                .is_none_or(|u| *u == KeyUsageType::EncryptDecrypt);
        if !symmetric {
            return Err(bad(format!(
                "key {arn} must be a symmetric encryption key (KeySpec SYMMETRIC_DEFAULT, KeyUsage ENCRYPT_DECRYPT)"
            )));
        }
        Ok(arn.to_string())
    }

    /// One SDK call on the backend's runtime; its failure as a [`KmsError`].
    async fn call<T, E>(
        &self,
        send: impl std::future::Future<Output = Result<T, errors::SdkError<E>>> + Send + 'static,
        action: &str,
    ) -> Result<T, KmsError>
    where
        T: Send + 'static,
        E: errors::ServiceError,
    {
        match self.rt.run(send).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(errors::fault(self, errors::classify(e), action)),
            Err(detail) => Err(errors::fault(self, errors::Fault::Other(detail), action)),
        }
    }

    /// Like [`Self::call`], but a ciphertext KMS refuses is `w`'s `InvalidCiphertext`.
    async fn call_on<T, E>(
        &self,
        send: impl std::future::Future<Output = Result<T, errors::SdkError<E>>> + Send + 'static,
        action: &str,
        dek_id: &str,
        w: &WrappedKey,
    ) -> Result<T, KmsError>
    where
        T: Send + 'static,
        E: errors::ServiceError,
    {
        match self.rt.run(send).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => match errors::classify(e) {
                errors::Fault::Service { code, .. } if errors::refuses_ciphertext(&code) => {
                    Err(w.invalid(dek_id))
                }
                f => Err(errors::fault(self, f, action)),
            },
            Err(detail) => Err(errors::fault(self, errors::Fault::Other(detail), action)),
        }
    }

    async fn wrap_dek(&self, dek: &DataKey) -> Result<WrappedKey, KmsError> {
        let call = self
            .client
            .encrypt()
            .key_id(&self.arn)
            .plaintext(Blob::new(dek.expose().to_vec()))
            .set_encryption_context(Some(self.context(dek.id())))
            .send();
        let out = self.call(call, "Encrypt").await?;
        let ciphertext = out.ciphertext_blob.map(Blob::into_inner);
        match (ciphertext, out.key_id) {
            (Some(ciphertext), Some(kek_id)) if !ciphertext.is_empty() => Ok(WrappedKey {
                kek_id,
                kek_version: 1,
                ciphertext,
            }),
            _ => Err(KmsError::Backend {
                backend: self.backend(),
                key: self.key.clone(),
                problem: "Encrypt answered without a ciphertext and key id".into(),
            }),
        }
    }

    async fn unwrap_dek(&self, dek_id: &str, w: &WrappedKey) -> Result<DataKey, KmsError> {
        w.check_kek(self, &self.arn)?;
        if w.kek_version != 1 || w.ciphertext.is_empty() {
            return Err(w.invalid(dek_id));
        }
        let call = self
            .client
            .decrypt()
            .key_id(&w.kek_id)
            .ciphertext_blob(Blob::new(w.ciphertext.clone()))
            .set_encryption_context(Some(self.context(dek_id)))
            .send();
        let out = self.call_on(call, "Decrypt", dek_id, w).await?;
        let plain = Zeroizing::new(out.plaintext.map(Blob::into_inner).unwrap_or_default());
        let bytes: [u8; 32] = plain.as_slice().try_into().map_err(|_| w.invalid(dek_id))?;
        Ok(DataKey::from_parts(dek_id.to_string(), bytes))
    }

    /// Moves the wrapped DEK `w` of `dek_id` to the configured key (which may be another key
    /// than `w`'s) with `ReEncrypt`, under the same EncryptionContext: the DEK never leaves
    /// KMS. Needs `kms:ReEncryptFrom` on `w`'s key and `kms:ReEncryptTo` on this one.
    pub(crate) async fn reencrypt(
        &self,
        dek_id: &str,
        w: &WrappedKey,
    ) -> Result<WrappedKey, KmsError> {
        if !is_key_arn(&w.kek_id) {
            return Err(KmsError::KeyNotFound {
                backend: self.describe(),
                kek_id: w.kek_id.clone(),
                version: w.kek_version,
            });
        }
        if w.ciphertext.is_empty() {
            return Err(w.invalid(dek_id));
        }
        let call = self
            .client
            .re_encrypt()
            .ciphertext_blob(Blob::new(w.ciphertext.clone()))
            .source_key_id(&w.kek_id)
            .set_source_encryption_context(Some(self.context(dek_id)))
            .destination_key_id(&self.arn)
            .set_destination_encryption_context(Some(self.context(dek_id)))
            .send();
        let out = self.call_on(call, "ReEncrypt", dek_id, w).await?;
        match (out.ciphertext_blob.map(Blob::into_inner), out.key_id) {
            (Some(ciphertext), Some(kek_id)) if !ciphertext.is_empty() => Ok(WrappedKey {
                kek_id,
                kek_version: 1,
                ciphertext,
            }),
            _ => Err(KmsError::Backend {
                backend: self.backend(),
                key: self.key.clone(),
                problem: "ReEncrypt answered without a ciphertext and key id".into(),
            }),
        }
    }

    /// Rotates the key's material now (`RotateKeyOnDemand`; needs `kms:RotateKeyOnDemand`).
    /// The key id stays, old material keeps decrypting inside KMS, and KMS does not say which
    /// material a ciphertext used: the version new wraps record stays 1, and that is what
    /// this returns.
    pub(crate) async fn rotate_now(&self) -> Result<u32, KmsError> {
        let call = self.client.rotate_key_on_demand().key_id(&self.arn).send();
        self.call(call, "RotateKeyOnDemand").await?;
        Ok(1)
    }

    async fn index_secret(&self) -> Result<&Zeroizing<[u8; 32]>, KmsError> {
        self.index
            .get_or_try_init(|| async {
                let w = self.index_secret.as_ref().ok_or_else(|| KmsError::Backend {
                    backend: self.backend(),
                    key: self.key.clone(),
                    problem: "the store holds no wrapped index secret (keys/index/); it is written at `holdfast init`".into(),
                })?;
                let dek = self.unwrap_dek(&w.secret_id, &w.wrapped).await?;
                Ok(Zeroizing::new(*dek.expose()))
            })
            .await
    }

    fn signer(&self) -> Result<&Arc<dyn Kms>, KmsError> {
        self.signer.as_ref().ok_or_else(|| KmsError::Backend {
            backend: self.backend(),
            key: self.key.clone(),
            problem: "heads of an AWS KMS store are signed with the local keyring's Ed25519 key, and none was opened (--keyring or HOLDFAST_KEYRING)".into(),
        })
    }
}

/// The SDK configuration `cfg` asks for: our HTTPS client (rustls on ring), standard retries,
/// the timeouts, and the region, endpoint and credentials when `cfg` fixes them (else the
/// SDK's chains).
fn loader(cfg: &AwsKmsConfig) -> aws_config::ConfigLoader {
    use aws_config::retry::RetryConfig;
    use aws_config::timeout::TimeoutConfig;
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(cfg.max_attempts.max(1))
                .with_initial_backoff(cfg.initial_backoff),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(cfg.attempt_timeout)
                .operation_attempt_timeout(cfg.attempt_timeout)
                .build(),
        );
    if let Some(r) = cfg.region() {
        loader = loader.region(aws_config::Region::new(r));
    }
    if let Some(e) = &cfg.endpoint {
        loader = loader.endpoint_url(e);
    }
    if let Some(c) = &cfg.credentials {
        loader = loader.credentials_provider(c.clone());
    }
    loader
}

impl Kms for AwsKms {
    fn describe(&self) -> String {
        format!("{} key `{}`", self.backend(), self.key)
    }
    fn kek_id(&self) -> &str {
        &self.arn
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
        Box::pin(async move { self.signer()?.sign(message).await })
    }
    fn signing_key(&self) -> BoxFuture<'_, Result<Option<PublicKey>, KmsError>> {
        Box::pin(async move {
            match &self.signer {
                Some(s) => s.signing_key().await,
                None => Ok(None),
            }
        })
    }
    fn info(&self) -> BoxFuture<'_, Result<KekInfo, KmsError>> {
        Box::pin(self.key_info())
    }
    fn rotate(&self, _now: chrono::DateTime<chrono::Utc>) -> BoxFuture<'_, Result<u32, KmsError>> {
        Box::pin(self.rotate_now())
    }
    fn retire(&self, _through: u32) -> BoxFuture<'_, Result<(), KmsError>> {
        Box::pin(async move { Err(self.no_retirement()) })
    }
    fn rewrap<'a>(
        &'a self,
        keys: &'a [(&'a str, &'a WrappedKey)],
    ) -> BoxFuture<'a, Result<Vec<WrappedKey>, KmsError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(keys.len());
            for (id, w) in keys {
                out.push(self.reencrypt(id, w).await?);
            }
            Ok(out)
        })
    }
}

mod keys;

#[cfg(test)]
mod tests;
