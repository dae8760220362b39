//! A read-only object store that lists exactly the committed data files (from the latest
//! manifests) and reads through to the real store. An interrupted batch's uncommitted files
//! are therefore never visible to SQL, and no directory is ever listed.

use crate::lake::manifest::Loaded;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use std::ops::Range;
use std::sync::Arc;

#[derive(Debug)]
pub struct CommittedView {
    inner: Arc<dyn ObjectStore>,
    files: Arc<Vec<ObjectMeta>>,
}

impl CommittedView {
    pub fn new(inner: Arc<dyn ObjectStore>, latest: &[Loaded]) -> Self {
        let mut files: Vec<ObjectMeta> = latest
            .iter()
            .flat_map(|l| l.manifest.files.iter())
            // every entry of a loaded manifest is a data file path (checked when read)
            .filter_map(|f| Some((f, f.location().ok()?)))
            .map(|(f, location)| ObjectMeta {
                location,
                last_modified: f.added_at,
                size: f.size_bytes,
                e_tag: None,
                version: None,
            })
            .collect();
        files.sort_by(|a, b| a.location.cmp(&b.location));
        CommittedView {
            inner,
            files: Arc::new(files),
        }
    }

    fn matching(&self, prefix: Option<&Path>) -> Vec<ObjectMeta> {
        let want: Vec<String> = prefix
            .map(|p| p.parts().map(|s| s.as_ref().to_string()).collect())
            .unwrap_or_default();
        self.files
            .iter()
            .filter(|m| prefix_matches(&want, &m.location))
            .cloned()
            .collect()
    }
}

/// Segment-wise prefix match where `month=1` also matches `month=01` (DataFusion renders
/// integer partition values unpadded; holdfast writes them zero-padded).
fn prefix_matches(want: &[String], location: &Path) -> bool {
    let mut parts = location.parts();
    want.iter().all(|w| {
        let Some(have) = parts.next() else {
            return false;
        };
        let have = have.as_ref();
        if have == w {
            return true;
        }
        match (w.split_once('='), have.split_once('=')) {
            (Some((k1, v1)), Some((k2, v2)))
                if k1 == k2 && matches!(k1, "year" | "month" | "day") =>
            {
                matches!((v1.parse::<i64>(), v2.parse::<i64>()), (Ok(a), Ok(b)) if a == b)
            }
            _ => false,
        }
    })
}

impl std::fmt::Display for CommittedView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CommittedView({} files over {})",
            self.files.len(),
            self.inner
        )
    }
}

fn read_only(op: &str) -> object_store::Error {
    object_store::Error::NotSupported {
        source: format!("{op}: the query view of a store is read-only").into(),
    }
}

#[async_trait]
impl ObjectStore for CommittedView {
    async fn put_opts(
        &self,
        _: &Path,
        _: PutPayload,
        _: PutOptions,
    ) -> object_store::Result<PutResult> {
        Err(read_only("put"))
    }
    async fn put_multipart_opts(
        &self,
        _: &Path,
        _: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(read_only("put"))
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        locations.map(|_| Err(read_only("delete"))).boxed()
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        stream::iter(self.matching(prefix).into_iter().map(Ok)).boxed()
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let depth = prefix.map_or(0, |p| p.parts().count());
        let mut dirs = std::collections::BTreeSet::new();
        let mut objects = Vec::new();
        for m in self.matching(prefix) {
            let parts: Vec<_> = m.location.parts().collect();
            if parts.len() == depth + 1 {
                objects.push(m);
            } else if parts.len() > depth + 1 {
                #[allow(clippy::disallowed_methods)]
                // a listing's common prefix, of a path layout built
                dirs.insert(Path::from_iter(parts[..=depth].iter().cloned()));
            }
        }
        Ok(ListResult {
            common_prefixes: dirs.into_iter().collect(),
            objects,
        })
    }
    async fn copy_opts(&self, _: &Path, _: &Path, _: CopyOptions) -> object_store::Result<()> {
        Err(read_only("copy"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_partition_prefix_matches_padded_path() {
        #[allow(clippy::disallowed_methods)] // a fixed path to test prefix matching
        let loc = Path::from("lake/year=2025/month=01/day=05/interaction_type=CALL/part-x.parquet");
        let w = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(prefix_matches(&w(&["lake", "year=2025", "month=1"]), &loc));
        assert!(prefix_matches(
            &w(&["lake", "year=2025", "month=01", "day=5"]),
            &loc
        ));
        assert!(!prefix_matches(&w(&["lake", "year=2025", "month=2"]), &loc));
        assert!(!prefix_matches(
            &w(&[
                "lake",
                "year=2025",
                "month=01",
                "day=05",
                "interaction_type=CHAT"
            ]),
            &loc
        ));
        assert!(prefix_matches(&[], &loc));
    }
}
