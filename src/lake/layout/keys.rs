//! Paths of the key objects: newer wrappings of DEKs whose home object is never rewritten.

use super::{REWRAPPED, object, valid_id};
use object_store::path::Path;

/// `keys/rewrapped/<dek-id>/v<20 digits>.json`: one rewrapping of a DEK (the highest
/// sequence is the newest).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RewrappedKeyPath {
    dek_id: String,
    pub sequence: u64,
}

impl RewrappedKeyPath {
    /// `None` for a DEK id that is not a valid object id, or that is `.` or `..` (a folder
    /// name here, which a path would not keep).
    pub fn new(dek_id: &str, sequence: u64) -> Option<Self> {
        let folder = dek_id != "." && dek_id != "..";
        (valid_id(dek_id) && folder).then(|| RewrappedKeyPath {
            dek_id: dek_id.to_string(),
            sequence,
        })
    }
    pub fn dek_id(&self) -> &str {
        &self.dek_id
    }
    pub fn to_path(&self) -> Path {
        object(format!(
            "{REWRAPPED}/{}/v{:020}.json",
            self.dek_id, self.sequence
        ))
    }
    pub fn parse(path: &Path) -> Option<Self> {
        let rest = path.as_ref().strip_prefix(REWRAPPED)?.strip_prefix('/')?;
        let (dek_id, file) = rest.split_once('/')?;
        let n = file.strip_prefix('v')?.strip_suffix(".json")?;
        if n.len() != 20 || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Self::new(dek_id, n.parse().ok()?)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build paths by hand to feed the parser
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn rewrapped_key_paths_round_trip(id in "[A-Za-z0-9_.-]{1,80}", seq in any::<u64>()) {
            prop_assume!(id != "." && id != "..");
            let p = RewrappedKeyPath::new(&id, seq).unwrap();
            prop_assert_eq!(RewrappedKeyPath::parse(&p.to_path()), Some(p));
        }
    }

    #[test]
    fn dot_folders_are_refused() {
        assert_eq!(RewrappedKeyPath::new(".", 1), None);
        assert_eq!(RewrappedKeyPath::new("..", 1), None);
    }

    #[test]
    fn other_objects_are_not_rewrapped_keys() {
        for s in [
            "keys/rewrapped/dek-1/v1.json",
            "keys/rewrapped/dek-1/00000000000000000001.json",
            "keys/rewrapped/v00000000000000000001.json",
            "keys/index/v00000000000000000001.json",
            "keys/rewrapped/a/b/v00000000000000000001.json",
        ] {
            assert_eq!(
                RewrappedKeyPath::parse(&Path::parse(s).unwrap()),
                None,
                "{s}"
            );
        }
    }
}
