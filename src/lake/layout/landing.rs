//! Paths of landing objects and of those a batch moved aside. A landing object holds one
//! segment (`landing/<segment-id>.seg`, what `ingest` writes) or several back to back
//! (`landing/<segment-id>.segs`, one group commit of a server, named by its first segment).
//! A binary that knows only `.seg` leaves a `.segs` object alone in landing.

use super::{FAILED, LANDING, LandingPath, object, parse_id, valid_id};
use object_store::path::Path;

/// `landing/<segment-id>.seg`: one landed segment.
pub fn landing_segment(id: &str) -> Path {
    debug_assert!(valid_id(id));
    object(format!("{LANDING}/{id}.seg"))
}

/// `landing/<segment-id>.segs`: landed segments back to back, named by the first.
pub fn landing_segments(first_id: &str) -> Path {
    debug_assert!(valid_id(first_id));
    object(format!("{LANDING}/{first_id}.segs"))
}

/// The id a landing object is named by (its only or first segment's), for either kind.
pub fn parse_landing_segment(path: &Path) -> Option<String> {
    LandingPath::parse(path)
        .map(|l| l.segment_id)
        .or_else(|| parse_id(LANDING, ".segs", path).map(str::to_string))
}

/// Whether a landing (or failed) object holds several segments back to back.
pub fn holds_several(path: &Path) -> bool {
    path.as_ref().ends_with(".segs")
}

/// `failed/<segment-id>.seg[s]`, or `failed/<segment-id>.<batch-id>.seg[s]` for a second
/// object of the same id (bytes differing): a landing object a batch moved aside, named as it
/// was in landing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FailedSegmentPath {
    segment_id: String,
    batch_id: Option<String>,
    several: bool,
}

/// `20261126T140312Z-1a2b3c4d`, as [`super::batch_id`] makes them.
fn is_batch_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 25
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && &b[15..17] == b"Z-"
        && b[17..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

impl FailedSegmentPath {
    pub fn new(segment_id: &str, batch_id: Option<&str>, several: bool) -> Option<Self> {
        (valid_id(segment_id) && batch_id.is_none_or(is_batch_id)).then(|| FailedSegmentPath {
            segment_id: segment_id.to_string(),
            batch_id: batch_id.map(str::to_string),
            several,
        })
    }
    pub fn segment_id(&self) -> &str {
        &self.segment_id
    }
    pub fn batch_id(&self) -> Option<&str> {
        self.batch_id.as_deref()
    }
    pub fn to_path(&self) -> Path {
        let ext = if self.several { "segs" } else { "seg" };
        match &self.batch_id {
            None => object(format!("{FAILED}/{}.{ext}", self.segment_id)),
            Some(b) => object(format!("{FAILED}/{}.{b}.{ext}", self.segment_id)),
        }
    }
    pub fn parse(path: &Path) -> Option<Self> {
        let (name, several) = match parse_id(FAILED, ".seg", path) {
            Some(n) => (n, false),
            None => (parse_id(FAILED, ".segs", path)?, true),
        };
        match name.rsplit_once('.') {
            Some((id, b)) if is_batch_id(b) => Self::new(id, Some(b), several),
            _ => Self::new(name, None, several),
        }
    }
}

/// Where a landing object goes when a batch moves it aside (`several` as it was named).
pub fn failed_segment(id: &str, batch_id: Option<&str>, several: bool) -> Path {
    FailedSegmentPath::new(id, batch_id, several)
        .expect("a landing id and a batch id")
        .to_path()
}
