//! Create-only uploads to S3. Parts are collected until [`PART`] bytes; an object smaller than
//! that is one `PutObject` with `If-None-Match: *`, a larger one a multipart upload whose
//! parts carry SHA-256 checksums and whose completion carries `If-None-Match: *`. A failed or
//! dropped upload is aborted, so it never becomes an object and its parts are not kept.

use super::conn::{Conn, generic};
use super::xml::Part;
use bytes::{Bytes, BytesMut};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, PutMode, PutPayload, PutResult, UploadPart};
use std::sync::{Arc, Mutex};

/// The size of a part (S3's minimum is 5 MiB, except for the last).
pub(crate) const PART: usize = 8 << 20;

#[derive(Debug)]
pub(crate) struct S3Upload {
    pub(super) conn: Conn,
    pub(super) s3: AmazonS3,
    pub(super) handle: tokio::runtime::Handle,
    /// The object's full key (with the store's prefix), as a path of the bucket.
    pub(super) path: Path,
    pub(super) buf: Vec<Bytes>,
    pub(super) buffered: usize,
    pub(super) next: u32,
    pub(super) id: Arc<tokio::sync::OnceCell<String>>,
    pub(super) parts: Arc<Mutex<Vec<Part>>>,
    pub(super) done: bool,
    /// Where to pin the new version once complete: the backend's reader and the object's
    /// path in the store.
    pub(super) pins: Option<(Arc<super::pinned::Pinned>, Path)>,
    /// The SHA-256 of every byte given so far (S3 checks each part, or the single PUT,
    /// against its own checksum; this is the whole object's, for the manifest to be checked
    /// against).
    sha256: sha2::Sha256,
}

impl S3Upload {
    pub(super) fn new(
        conn: Conn,
        s3: AmazonS3,
        handle: tokio::runtime::Handle,
        path: Path,
    ) -> Self {
        S3Upload {
            conn,
            s3,
            handle,
            path,
            buf: Vec::new(),
            buffered: 0,
            next: 1,
            id: Arc::default(),
            parts: Arc::default(),
            done: false,
            pins: None,
            sha256: sha2::Digest::new(),
        }
    }

    fn take(&mut self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.buffered);
        for chunk in self.buf.drain(..) {
            b.extend_from_slice(&chunk);
        }
        self.buffered = 0;
        b.freeze()
    }

    /// Sends the buffered bytes as the next part (starting the upload if it is the first).
    fn send_part(&mut self) -> UploadPart {
        let bytes = self.take();
        let number = self.next;
        self.next += 1;
        let (conn, id, parts) = (self.conn.clone(), self.id.clone(), self.parts.clone());
        let key = self.path.to_string();
        let task = self.handle.spawn(async move {
            let upload = id.get_or_try_init(|| conn.create_upload(&key)).await?;
            let part = conn.upload_part(&key, upload, number, bytes).await?;
            parts.lock().expect("parts").push(part);
            Ok(())
        });
        Box::pin(async move {
            task.await
                .map_err(|e| generic(format!("the part upload task failed: {e}")))?
        })
    }

    fn exists(&self) -> object_store::Error {
        object_store::Error::AlreadyExists {
            path: self.path.to_string(),
            source: "objects are written once".into(),
        }
    }

    async fn complete_multipart(&mut self) -> object_store::Result<PutResult> {
        if self.buffered > 0 {
            self.send_part().await?;
        }
        let upload = self
            .id
            .get()
            .cloned()
            .ok_or_else(|| generic("no upload to complete".into()))?;
        let mut parts = self.parts.lock().expect("parts").clone();
        parts.sort_by_key(|p| p.number);
        let (conn, key) = (self.conn.clone(), self.path.to_string());
        let (u, k) = (upload.clone(), key.clone());
        let done = self
            .handle
            .spawn(async move { conn.complete_upload(&k, &u, &parts).await })
            .await
            .map_err(|e| generic(format!("the completion task failed: {e}")))?;
        match done {
            Ok(Some(version)) => {
                self.done = true;
                Ok(PutResult {
                    e_tag: None,
                    version,
                })
            }
            Ok(None) => Err(self.exists()),
            Err(e) => Err(e),
        }
    }
}

#[async_trait::async_trait]
impl MultipartUpload for S3Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        for chunk in data.iter() {
            sha2::Digest::update(&mut self.sha256, chunk);
            self.buffered += chunk.len();
            self.buf.push(chunk.clone());
        }
        if self.buffered >= PART {
            self.send_part()
        } else {
            Box::pin(async { Ok(()) })
        }
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let done = self.finish().await;
        if let (
            Ok(PutResult {
                version: Some(v), ..
            }),
            Some((reader, path)),
        ) = (&done, &self.pins)
        {
            reader.pin(path, v);
            let sha256 = sha2::Digest::finalize(self.sha256.clone());
            reader.uploaded(path, hex::encode(sha256));
        }
        done
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.abort_upload().await
    }
}

impl S3Upload {
    /// Completes: one create-only PUT when no part went yet, else the multipart completion.
    async fn finish(&mut self) -> object_store::Result<PutResult> {
        if self.id.get().is_none() && self.next == 1 {
            // small: one create-only PUT (SHA-256 checksum from the client's settings)
            let payload = PutPayload::from(self.take());
            super::counted(1);
            let r = self
                .s3
                .put_opts(&self.path, payload, PutMode::Create.into())
                .await;
            self.done = true;
            return match r {
                Err(object_store::Error::AlreadyExists { .. }) => Err(self.exists()),
                other => other,
            };
        }
        let r = self.complete_multipart().await;
        if r.is_err() {
            let _ = self.abort_upload().await;
        }
        r
    }

    async fn abort_upload(&mut self) -> object_store::Result<()> {
        self.done = true;
        self.buf.clear();
        self.buffered = 0;
        let Some(upload) = self.id.get().cloned() else {
            return Ok(());
        };
        let (conn, key) = (self.conn.clone(), self.path.to_string());
        self.handle
            .spawn(async move { conn.abort_upload(&key, &upload).await })
            .await
            .map_err(|e| generic(format!("the abort task failed: {e}")))?
    }
}

impl Drop for S3Upload {
    /// An upload dropped before completing is aborted in the background (a killed process
    /// leaves it to the bucket's lifecycle rule for incomplete uploads).
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (conn, key, id) = (self.conn.clone(), self.path.to_string(), self.id.clone());
        // detached: the abort runs on the backend's runtime (an upload a part was still
        // starting is left to the lifecycle rule, like a killed process's)
        drop(self.handle.spawn(async move {
            if let Some(upload) = id.get() {
                let _ = conn.abort_upload(&key, upload).await;
            }
        }));
    }
}
