//! The S3 backend (`s3://bucket/prefix`): a store in a versioned bucket with Object Lock,
//! where the provider, not holdfast, refuses to delete what must be kept.
//!
//! - Reads and create-only puts go through `object_store`'s `AmazonS3` (puts carry
//!   `If-None-Match: *` and an `x-amz-checksum-sha256`); uploads are create-only too
//!   ([`upload`]).
//! - Locks are the object version's own: a lock is read with HEAD and set with
//!   `PutObjectRetention` (mode COMPLIANCE, only ever extended) and `PutObjectLegalHold` on the
//!   exact version, after the object is written (moto ignores lock headers on multipart
//!   uploads; applying them after works on both). There are no `_locks/` records here.
//! - Deleting means deleting versions: a delete removes every version and delete marker of
//!   the key by version id; a version S3 refuses (a lock) is `ObjectLocked`.
//! - Opening checks the bucket: versioned, Object Lock enabled, no default retention (which
//!   would lock leases and landing segments too); `--create-bucket` makes one so.
//!
//! Credentials, region and endpoint come from the AWS SDK's usual chain (environment,
//! profile, web identity, ECS, IMDS; `AWS_ENDPOINT_URL` for S3-compatible stores).

mod api;
mod conn;
pub mod input;
mod pinned;
mod upload;
mod xml;

use super::lock::{Lock, ObjectLock};
use super::{Backend, Durability, Put};
use crate::lake::LakeError;
use api::DeleteError;
use chrono::{DateTime, Utc};
pub(crate) use conn::Overrides;
use conn::{Conn, Rt};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use std::sync::Arc;

/// S3 requests this process has sent (each attempt, every store and input bucket); reports
/// in JSON carry it as `s3_requests`.
static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many S3 requests this process has sent so far.
pub fn requests() -> u64 {
    REQUESTS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts `n` requests.
fn counted(n: u64) {
    REQUESTS.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

/// When an answer came, and the `Date` it carried.
type Seen = (std::time::Instant, DateTime<Utc>);

/// The Object Lock mode data files are retained in unless the store marker says otherwise.
const MODE: &str = "COMPLIANCE";

pub(crate) struct S3 {
    rt: Arc<Rt>,
    conn: Conn,
    raw: AmazonS3,
    /// The read side: reads of a pinned path fetch its committed version.
    reader: Arc<pinned::Pinned>,
    /// The store's prefix in the bucket: empty, or ending in `/`.
    prefix: String,
    url: String,
    /// S3's clock as last seen (its answer's `Date`, and when it came).
    seen: std::sync::Mutex<Option<Seen>>,
    /// The Object Lock mode the store marker records, read at the first lock.
    mode: tokio::sync::OnceCell<String>,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3({})", self.url)
    }
}

fn unusable(url: &str, kind: std::io::ErrorKind, problem: String) -> LakeError {
    LakeError::io(format!("store {url}"), std::io::Error::new(kind, problem))
}

impl S3 {
    /// Connects to the store at `s3://bucket/prefix` and checks the bucket (see the module
    /// docs); with `create_bucket`, a missing bucket is created with Object Lock.
    pub(crate) fn open(bucket: &str, prefix: &str, create_bucket: bool) -> Result<Self, LakeError> {
        Self::open_with(bucket, prefix, create_bucket, &Overrides::default())
    }

    /// [`S3::open`] with the endpoint, region or credentials replaced (tests).
    pub(crate) fn open_with(
        bucket: &str,
        prefix: &str,
        create_bucket: bool,
        over: &Overrides,
    ) -> Result<Self, LakeError> {
        let url = match prefix {
            "" => format!("s3://{bucket}"),
            p => format!("s3://{bucket}/{p}"),
        };
        let (rt, conn, raw) = conn::connect(bucket, over)
            .map_err(|e| unusable(&url, std::io::ErrorKind::InvalidInput, e))?;
        let check = {
            let conn = conn.clone();
            rt.block_on(async move {
                let settings = conn.bucket_settings().await?;
                if settings.is_none() && create_bucket {
                    conn.create_bucket().await?;
                    return conn.bucket_settings().await;
                }
                Ok(settings)
            })
        };
        let settings = check.map_err(|e| {
            unusable(
                &url,
                std::io::ErrorKind::PermissionDenied,
                format!("{e} (check the AWS credentials, region and endpoint)"),
            )
        })?;
        bucket_fit(bucket, settings).map_err(|e| unusable(&url, std::io::ErrorKind::Other, e))?;
        let prefix = match prefix {
            "" => String::new(),
            p => format!("{p}/"),
        };
        #[allow(clippy::disallowed_methods)] // the backend's own prefix, not an object path
        let prefixed: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(
            raw.clone(),
            Path::from(prefix.trim_end_matches('/')),
        ));
        let reader = Arc::new(pinned::Pinned::new(prefixed));
        Ok(S3 {
            rt: Arc::new(rt),
            conn,
            raw,
            reader,
            prefix,
            url,
            seen: std::sync::Mutex::new(None),
            mode: tokio::sync::OnceCell::new(),
        })
    }

    /// The Object Lock mode of the store's data files: its marker's (COMPLIANCE when the
    /// marker names none or is not there yet).
    async fn mode(&self) -> Result<String, LakeError> {
        let marker = crate::lake::layout::store_marker();
        self.mode
            .get_or_try_init(|| async {
                let got = self.reader.get(&marker).await;
                let bytes = match got {
                    Ok(r) => Some(r.bytes().await),
                    Err(object_store::Error::NotFound { .. }) => None,
                    Err(e) => Some(Err(e)),
                };
                let mode = match bytes {
                    None => None,
                    Some(b) => {
                        let b = b.map_err(|e| LakeError::store("reading", marker.as_ref(), e))?;
                        super::marker::decode(&b)
                            .map_err(|e| LakeError::Corrupt {
                                object: marker.to_string(),
                                problem: e.to_string(),
                            })?
                            .object_lock_mode
                    }
                };
                Ok::<_, LakeError>(mode.unwrap_or_else(|| MODE.to_string()))
            })
            .await
            .cloned()
    }

    /// The key of `path` in the bucket.
    fn key(&self, path: &Path) -> String {
        format!("{}{}", self.prefix, path)
    }

    /// Runs `f` with the connection on the backend's runtime.
    async fn on_rt<T, F>(&self, f: impl FnOnce(Conn) -> F) -> Result<T, LakeError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, LakeError>> + Send + 'static,
    {
        let fut = f(self.conn.clone());
        self.rt
            .run(fut)
            .await
            .map_err(|e| LakeError::io("S3", std::io::Error::other(e)))?
    }
}

/// Whether a bucket can hold a store: it exists, is versioned, has Object Lock on and no
/// default retention. The error names the command that fixes it.
fn bucket_fit(
    bucket: &str,
    settings: Option<(Option<String>, xml::BucketLock)>,
) -> Result<(), String> {
    let Some((versioning, lock)) = settings else {
        return Err(format!(
            "bucket {bucket} does not exist (or these credentials cannot see it); create it with Object Lock: \
             `holdfast init --store s3://{bucket}/<prefix> --create-bucket`, or \
             `aws s3api create-bucket --bucket {bucket} --object-lock-enabled-for-bucket`"
        ));
    };
    if versioning.as_deref() != Some("Enabled") {
        return Err(format!(
            "bucket {bucket} is not versioned (Object Lock needs versioning): \
             `aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled`"
        ));
    }
    if !lock.enabled {
        return Err(format!(
            "bucket {bucket} has no Object Lock, so nothing would stop a delete: \
             `aws s3api put-object-lock-configuration --bucket {bucket} --object-lock-configuration ObjectLockEnabled=Enabled`"
        ));
    }
    if let Some((mode, period)) = lock.default {
        return Err(format!(
            "bucket {bucket} retains every new object ({mode}, {period}) by default, which would \
             lock leases and landing segments too; holdfast locks each data file itself. Remove \
             the default: `aws s3api put-object-lock-configuration --bucket {bucket} \
             --object-lock-configuration ObjectLockEnabled=Enabled`"
        ));
    }
    Ok(())
}

#[async_trait::async_trait]
impl Backend for S3 {
    fn reader(&self) -> Arc<dyn ObjectStore> {
        self.reader.clone()
    }

    fn pin(&self, path: &Path, version: &str) {
        self.reader.pin(path, version)
    }

    fn upload_sha256(&self, path: &Path) -> Option<String> {
        self.reader.upload_sha256(path)
    }

    async fn shadowed(&self, path: &Path) -> Result<Option<String>, LakeError> {
        let Some(pinned) = self.reader.version(path) else {
            return Ok(None);
        };
        let (key, object, bucket) = (self.key(path), path.to_string(), self.conn.bucket.clone());
        self.on_rt(move |conn| async move {
            let versions = conn
                .versions(&key)
                .await
                .map_err(|e| LakeError::store("listing the versions of", &object, e))?;
            let latest = versions.iter().find(|v| v.key == key && v.is_latest);
            let undo = |v: &str| {
                format!("aws s3api delete-object --bucket {bucket} --key {key} --version-id {v}")
            };
            Ok(match latest {
                Some(v) if v.version_id == pinned => None,
                Some(v) if v.delete_marker => Some(format!(
                    "a delete marker (version {}) hides the committed version {pinned} from readers by key (holdfast reads the committed version); remove the marker: {}",
                    v.version_id,
                    undo(&v.version_id)
                )),
                Some(v) => Some(format!(
                    "version {} was written over the committed version {pinned} (holdfast reads the committed version, readers by key the new one); remove it: {}",
                    v.version_id,
                    undo(&v.version_id)
                )),
                None => Some(format!("the committed version {pinned} is gone")),
            })
        })
        .await
    }

    fn describe(&self) -> String {
        self.url.clone()
    }

    async fn put_new(
        &self,
        path: &Path,
        bytes: PutPayload,
        _: Durability,
    ) -> Result<Put, LakeError> {
        match self
            .reader
            .put_opts(path, bytes, PutMode::Create.into())
            .await
        {
            Ok(done) => {
                if let Some(v) = &done.version {
                    self.reader.pin(path, v);
                }
                Ok(Put::Created)
            }
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Put::AlreadyExists),
            Err(e) => Err(LakeError::store("writing", path.as_ref(), e)),
        }
    }

    async fn delete(&self, path: &Path, _: Durability) -> Result<(), LakeError> {
        let (key, object) = (self.key(path), path.to_string());
        self.on_rt(move |conn| async move {
            let versions = conn
                .versions(&key)
                .await
                .map_err(|e| LakeError::store("deleting", &object, e))?;
            for v in versions.iter().filter(|v| v.key == key) {
                match conn.delete_version(&key, &v.version_id).await {
                    Ok(()) => {}
                    Err(DeleteError::Refused(code)) => {
                        return Err(LakeError::ObjectLocked {
                            object,
                            reason: format!(
                                "S3 refused to delete version {} ({code}): Object Lock",
                                v.version_id
                            ),
                        });
                    }
                    Err(DeleteError::Other(e)) => {
                        return Err(LakeError::store("deleting", &object, e));
                    }
                }
            }
            Ok(())
        })
        .await
    }

    fn remote(&self) -> bool {
        true
    }

    /// S3's clock: the last answer's `Date` plus the time since, less two seconds (the header
    /// has whole seconds).
    fn provider_now(&self) -> Option<DateTime<Utc>> {
        let (at, date) = (*self.seen.lock().expect("clock"))?;
        let since = chrono::Duration::from_std(at.elapsed()).unwrap_or_default();
        Some(date + since - chrono::Duration::seconds(2))
    }

    async fn start_upload(&self, path: &Path) -> Result<Box<dyn MultipartUpload>, LakeError> {
        #[allow(clippy::disallowed_methods)] // the full key of a store path, in the backend
        let full = Path::from(self.key(path));
        let mut up =
            upload::S3Upload::new(self.conn.clone(), self.raw.clone(), self.rt.handle(), full);
        up.pins = Some((self.reader.clone(), path.clone()));
        Ok(Box::new(up))
    }
}

#[async_trait::async_trait]
impl ObjectLock for S3 {
    async fn get_lock(&self, path: &Path) -> Result<Lock, LakeError> {
        let (key, object) = (self.key(path), path.to_string());
        let version = self.reader.version(path);
        let head = self
            .on_rt(move |conn| async move {
                conn.head(&key, version.as_deref())
                    .await
                    .map_err(|e| LakeError::store("reading the lock of", &object, e))
            })
            .await?;
        if let Some(date) = head.as_ref().and_then(|h| h.date) {
            *self.seen.lock().expect("clock") = Some((std::time::Instant::now(), date));
        }
        Ok(head.map(|h| h.lock).unwrap_or_default())
    }

    async fn put_lock(&self, path: &Path, lock: &Lock, _: Durability) -> Result<(), LakeError> {
        let (key, object, lock) = (self.key(path), path.to_string(), lock.clone());
        let pinned = self.reader.version(path);
        let mode = self.mode().await?;
        self.on_rt(move |conn| async move {
            let err = |e| LakeError::store("locking", &object, e);
            let head = conn.head(&key, pinned.as_deref()).await.map_err(err)?;
            let head = head.ok_or_else(|| {
                LakeError::Conflict(format!("cannot lock {object}: it does not exist"))
            })?;
            let version = head.version_id.clone().ok_or_else(|| {
                LakeError::Conflict(format!("cannot lock {object}: S3 gave no version id"))
            })?;
            if let Some(until) = lock.retain_until
                && head.lock.retain_until.is_none_or(|now| until > now)
            {
                conn.put_retention(&key, &version, &mode, until)
                    .await
                    .map_err(err)?;
            }
            if lock.legal_hold != head.lock.legal_hold {
                conn.put_legal_hold(&key, &version, lock.legal_hold)
                    .await
                    .map_err(err)?;
            }
            Ok(())
        })
        .await
    }

    async fn forget_lock(&self, _: &Path, _: Durability) -> Result<(), LakeError> {
        // the lock went with the version
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
