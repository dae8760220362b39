//! Reads of pinned versions: the object store the S3 backend hands to readers (query
//! sessions, Parquet readers, verify, sweeps). Every read of a key whose version was pinned
//! ([`crate::storage::Store::pin`], from the manifests that list the file) asks S3 for exactly
//! that version, so an overwrite or a delete marker over the key neither changes nor hides the
//! committed file. Every other call passes through.

use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

#[derive(Debug)]
pub(crate) struct Pinned {
    pub(crate) inner: Arc<dyn ObjectStore>,
    pub(crate) versions: RwLock<HashMap<Path, String>>,
    /// The SHA-256 (hex) of the bytes each upload of this process sent and S3 accepted
    /// against their checksums.
    uploads: RwLock<HashMap<Path, String>>,
}

impl Pinned {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Pinned {
            inner,
            versions: RwLock::new(HashMap::new()),
            uploads: RwLock::new(HashMap::new()),
        }
    }

    /// Records what the upload of `path` sent (the SHA-256 of its bytes, hex).
    pub(crate) fn uploaded(&self, path: &Path, sha256: String) {
        self.uploads
            .write()
            .expect("uploads")
            .insert(path.clone(), sha256);
    }

    /// The SHA-256 of the bytes the upload of `path` sent, if this process uploaded it.
    pub(crate) fn upload_sha256(&self, path: &Path) -> Option<String> {
        self.uploads.read().expect("uploads").get(path).cloned()
    }

    /// Reads of `path` fetch `version` from now on.
    pub(crate) fn pin(&self, path: &Path, version: &str) {
        self.versions
            .write()
            .expect("pins")
            .insert(path.clone(), version.to_string());
    }

    /// The version reads of `path` fetch, if it is pinned.
    pub(crate) fn version(&self, path: &Path) -> Option<String> {
        self.versions.read().expect("pins").get(path).cloned()
    }
}

impl std::fmt::Display for Pinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pinned({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Pinned {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        super::counted(1);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        super::counted(1);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, mut options: GetOptions) -> Result<GetResult> {
        super::counted(1);
        if options.version.is_none() {
            options.version = self.version(location);
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        super::counted(1); // and one more per further page of 1,000 keys
        let mut seen = 0u64;
        Box::pin(self.inner.list(prefix).inspect(move |_| {
            seen += 1;
            if seen.is_multiple_of(1000) {
                super::counted(1);
            }
        }))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        super::counted(1);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}
