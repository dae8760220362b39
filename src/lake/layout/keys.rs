//! Paths of the key objects: the wrapped index secret, newer wrappings of DEKs whose home
//! object is never rewritten, tenants' own keys and changes of the platform key.

use super::{chain_path, object, parse_chain, valid_id};
use object_store::path::Path;

/// The blind-index secret wrapped by a remote KMS (`keys/index/v<20 digits>.json`).
pub const INDEX_SECRETS: &str = "keys/index";
/// Newer wrappings of DEKs held in objects that are never rewritten (landing and failed
/// segments, quarantine entries, the index secret): `keys/rewrapped/<dek-id>/v<20 digits>.json`.
pub const REWRAPPED: &str = "keys/rewrapped";
/// Tenants' own keys (BYOK): which KEK protects each, and its wrapped blind-index secret
/// (`keys/tenants/<tenant>/{binding,index}/v<20 digits>.json`).
pub const TENANT_KEYS: &str = "keys/tenants";
/// Changes of the store's platform KEK after `init` (`keys migrate`):
/// `keys/platform/v<20 digits>.json`; the highest sequence is in force.
pub const PLATFORM_KEYS: &str = "keys/platform";

chain!(
    /// `keys/index/v<20 digits>.json`: the store's wrapped blind-index secret (Transit).
    IndexSecretPath,
    INDEX_SECRETS
);
chain!(
    /// `keys/platform/v<20 digits>.json`: a change of the store's platform KEK.
    PlatformKeyPath,
    PLATFORM_KEYS
);

/// Whether `tenant` may have a key of its own: its id names folders of the store (and, after
/// `holdfast-index-secret.`, a DEK id), so at most 48 letters, digits, `-`, `_` and `.`, and
/// not `.` or `..`.
pub fn tenant_key_id_ok(tenant: &str) -> bool {
    tenant.len() <= 48 && valid_id(tenant) && tenant != "." && tenant != ".."
}

/// What a tenant's key object holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TenantObject {
    /// Which KEK protects the tenant (`holdfast keys bind`).
    Binding,
    /// The tenant's blind-index secret, wrapped under its own KEK.
    IndexSecret,
}

impl TenantObject {
    fn folder(self) -> &'static str {
        match self {
            TenantObject::Binding => "binding",
            TenantObject::IndexSecret => "index",
        }
    }
}

/// `keys/tenants/<tenant>/{binding,index}/v<20 digits>.json` (the highest sequence is the
/// newest).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantKeyPath {
    tenant: String,
    pub kind: TenantObject,
    pub sequence: u64,
}

impl TenantKeyPath {
    /// `None` for a tenant that may not have a key of its own ([`tenant_key_id_ok`]).
    pub fn new(tenant: &str, kind: TenantObject, sequence: u64) -> Option<Self> {
        tenant_key_id_ok(tenant).then(|| TenantKeyPath {
            tenant: tenant.to_string(),
            kind,
            sequence,
        })
    }
    pub fn tenant(&self) -> &str {
        &self.tenant
    }
    pub fn to_path(&self) -> Path {
        object(format!(
            "{TENANT_KEYS}/{}/{}/v{:020}.json",
            self.tenant,
            self.kind.folder(),
            self.sequence
        ))
    }
    pub fn parse(path: &Path) -> Option<Self> {
        let rest = path.as_ref().strip_prefix(TENANT_KEYS)?.strip_prefix('/')?;
        let (tenant, rest) = rest.split_once('/')?;
        let (folder, file) = rest.split_once('/')?;
        let kind = [TenantObject::Binding, TenantObject::IndexSecret]
            .into_iter()
            .find(|k| k.folder() == folder)?;
        let n = file.strip_prefix('v')?.strip_suffix(".json")?;
        if n.len() != 20 || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Self::new(tenant, kind, n.parse().ok()?)
    }
}

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

    proptest! {
        #[test]
        fn tenant_key_paths_round_trip(t in "[A-Za-z0-9_.-]{1,48}", seq in any::<u64>(), b in any::<bool>()) {
            prop_assume!(t != "." && t != "..");
            let kind = if b { TenantObject::Binding } else { TenantObject::IndexSecret };
            let p = TenantKeyPath::new(&t, kind, seq).unwrap();
            prop_assert_eq!(TenantKeyPath::parse(&p.to_path()), Some(p));
        }
    }

    #[test]
    fn tenant_ids_that_cannot_name_a_folder_are_refused() {
        for t in [".", "..", "a/b", "", &"x".repeat(49)] {
            assert_eq!(TenantKeyPath::new(t, TenantObject::Binding, 1), None, "{t}");
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
