//! What the batch's stages share about a data file before it exists: which file a record goes
//! to ([`FileKey`]), that file's DEK and its tenants' dictionaries ([`KeyBook`]), and the
//! dedupe key of an event ([`IdKey`]).

use crate::crypto::{Cipher, DataKey, Dictionary, sha256};
use crate::lake::layout::Partition;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// What one data file of a batch holds: one partition's records under one retention policy,
/// so that a file's records expire together and its storage lock frees it whole (files that
/// mixed policies would have to be rewritten when the shorter one ends), and of one key
/// domain: the records of tenants without a key of their own, or those of one tenant with its
/// own key (BYOK), whose DEK that key wraps.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct FileKey {
    pub(super) partition: Partition,
    pub(super) policy: Arc<str>,
    /// The tenant whose own key wraps the file's DEK (`None`: the platform key).
    pub(super) domain: Option<Arc<str>>,
}

/// Per-file keys of this batch: the file's DEK, and its tenants' dictionaries once learnt.
pub(super) struct PartKeys {
    pub(super) dek: DataKey,
    pub(super) cipher: Cipher,
    pub(super) dict: DictCell,
}

impl PartKeys {
    /// A new DEK; no dictionary yet.
    pub(super) fn generate(shared: bool) -> Self {
        let dek = DataKey::generate();
        let cipher = dek.cipher();
        PartKeys {
            dek,
            cipher,
            dict: DictCell {
                shared,
                ..DictCell::default()
            },
        }
    }
}

/// A learnt dictionary: `None` when there was too little to train on (plain zstd).
pub(super) type Learnt = Option<Arc<Dictionary>>;

/// A file's dictionaries, one per tenant, as the decode workers see them: a tenant's is
/// unknown while the sink learns it from that tenant's first records, then learnt; and every
/// one is unknown again once the file is closed ([`DictCell::close`]), so that the workers hand
/// the sink plaintext for any later file of the same partition and policy, which has a DEK
/// (and dictionaries) of its own.
#[derive(Default)]
pub(super) struct DictCell {
    learnt: RwLock<HashMap<String, Learnt>>,
    closed: AtomicBool,
    /// Test builds only: one dictionary for every tenant, as data file format 1 had.
    shared: bool,
}

impl DictCell {
    /// Which dictionary a tenant's records use: their own, or (format 1) the file's.
    pub(super) fn scope<'t>(&self, tenant: &'t str) -> &'t str {
        if self.shared { "" } else { tenant }
    }

    /// Whether this file is written in format 1 (test builds only).
    #[cfg(any(test, feature = "test-hooks"))]
    pub(super) fn shared(&self) -> bool {
        self.shared
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Learnt>> {
        self.learnt
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The dictionary to seal a record of `tenant` with, while the file is open and that
    /// tenant's dictionary is learnt.
    pub(super) fn get(&self, tenant: &str) -> Option<Learnt> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        self.read().get(self.scope(tenant)).cloned()
    }

    /// The tenant's dictionary, if learnt, whether the file is open or closed.
    pub(super) fn learnt(&self, tenant: &str) -> Option<Learnt> {
        self.read().get(self.scope(tenant)).cloned()
    }

    /// Every dictionary learnt, by tenant (the file's footer), sorted.
    pub(super) fn all(&self) -> Vec<(String, Arc<Dictionary>)> {
        let mut all: Vec<(String, Arc<Dictionary>)> = self
            .read()
            .iter()
            .filter_map(|(t, d)| Some((t.clone(), d.clone()?)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// How many dictionaries were learnt (their compression tables count while open).
    pub(super) fn count(&self) -> usize {
        self.read().values().filter(|d| d.is_some()).count()
    }

    /// Publishes what was learnt for `tenant` (once: a second value is ignored).
    pub(super) fn set(&self, tenant: &str, dict: Learnt) -> Learnt {
        let mut m = self
            .learnt
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.entry(self.scope(tenant).to_string())
            .or_insert(dict)
            .clone()
    }

    /// The file is closed: workers stop sealing with it, and its compression tables go (a
    /// worker that had already taken a dictionary still seals correctly, from its raw bytes).
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for d in self.read().values().flatten() {
            d.release_tables();
        }
    }
}

/// The first file of each partition and policy (the one the workers seal for); created by
/// whichever thread meets it first.
#[derive(Default)]
pub(super) struct KeyBook {
    parts: Mutex<HashMap<FileKey, Arc<PartKeys>>>,
    /// Test builds only: files of format 1, one dictionary for every tenant.
    shared: bool,
}

impl KeyBook {
    /// A key book for files of format 1 (test builds: to show that readers still read them).
    #[cfg(any(test, feature = "test-hooks"))]
    pub(super) fn format_1() -> Self {
        KeyBook {
            shared: true,
            ..KeyBook::default()
        }
    }

    pub(super) fn part(&self, p: &FileKey) -> Arc<PartKeys> {
        let mut m = self.parts.lock().expect("key book lock");
        m.entry(p.clone())
            .or_insert_with(|| Arc::new(PartKeys::generate(self.shared)))
            .clone()
    }

    /// Keys for a later file of a partition and policy (not shared with the workers).
    pub(super) fn later(&self) -> Arc<PartKeys> {
        Arc::new(PartKeys::generate(self.shared))
    }
}

/// Records a tenant's dictionary of a file is trained on.
pub(super) const TRAIN_ROWS: usize = crate::crypto::TRAIN_RECORDS;

/// The dedupe key of an event: a digest of its tenant and id (two tenants may use the same id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct IdKey([u8; 16]);

impl IdKey {
    pub(super) fn of(tenant_id: &str, event_id: &str) -> Self {
        let key = crate::crypto::aad(&[tenant_id.as_bytes(), event_id.as_bytes()]);
        IdKey(sha256(&key)[..16].try_into().expect("16 bytes"))
    }
}
