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

/// Per-file keys of this batch: the file's DEK, and (formats 1 and 2, which test builds still
/// write) its tenants' dictionaries once learnt.
pub(super) struct PartKeys {
    pub(super) dek: DataKey,
    pub(super) cipher: Cipher,
    pub(super) dict: DictCell,
}

impl PartKeys {
    /// A new DEK; no dictionary yet.
    pub(super) fn generate(format: Format) -> Self {
        let dek = DataKey::generate();
        let cipher = dek.cipher();
        PartKeys {
            dek,
            cipher,
            dict: DictCell {
                format,
                ..DictCell::default()
            },
        }
    }
}

/// A learnt dictionary: `None` when there was too little to train on (plain zstd).
pub(super) type Learnt = Option<Arc<Dictionary>>;

/// The data file format a batch writes: 3, or (test builds only, to show that readers still
/// read them) 1 or 2.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Format {
    /// Records sealed in groups when their rows are written; the sink holds a file's first
    /// [`OPEN_ROWS`] rows back so that a small file is written whole, its size known.
    #[default]
    Groups,
    /// Test builds only: each record sealed alone, with a dictionary per tenant (2) or one
    /// for every tenant of the file (1).
    #[cfg(any(test, feature = "test-hooks"))]
    Records { shared: bool },
}

/// A file's dictionaries, one per tenant, as the decode workers see them: a tenant's is
/// unknown while the sink learns it from that tenant's first records, then learnt; and every
/// one is unknown again once the file is closed ([`DictCell::close`]), so that the workers hand
/// the sink plaintext for any later file of the same partition and policy, which has a DEK
/// (and dictionaries) of its own. In format 3 there are no dictionaries: the workers always
/// hand plaintext, and the sink holds a file's first rows back under one scope, `""`, until
/// it "learns" that the file is not small ([`DictCell::learn_rows`]).
#[derive(Default)]
pub(super) struct DictCell {
    learnt: RwLock<HashMap<String, Learnt>>,
    closed: AtomicBool,
    format: Format,
}

impl DictCell {
    /// Which dictionary a tenant's records use: their own, or (formats 1 and 3) the file's.
    pub(super) fn scope<'t>(&self, tenant: &'t str) -> &'t str {
        match self.format {
            // "": every tenant's rows held back together
            Format::Groups => &tenant[..0],
            #[cfg(any(test, feature = "test-hooks"))]
            Format::Records { shared: true } => "",
            #[cfg(any(test, feature = "test-hooks"))]
            Format::Records { shared: false } => tenant,
        }
    }

    pub(super) fn format(&self) -> Format {
        self.format
    }

    /// Rows a scope holds back before it learns.
    pub(super) fn learn_rows(&self) -> usize {
        match self.format {
            Format::Groups => OPEN_ROWS,
            #[cfg(any(test, feature = "test-hooks"))]
            Format::Records { .. } => TRAIN_ROWS,
        }
    }

    /// What a scope learns from its first records: a dictionary (formats 1 and 2, when there
    /// is enough to learn from), or nothing (format 3).
    pub(super) fn train(&self, samples: &[&[u8]]) -> Learnt {
        let _ = samples;
        match self.format {
            Format::Groups => None,
            #[cfg(any(test, feature = "test-hooks"))]
            Format::Records { .. } => Dictionary::train(samples).map(Arc::new),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Learnt>> {
        self.learnt
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The dictionary to seal a record of `tenant` with, while the file is open and that
    /// tenant's dictionary is learnt.
    pub(super) fn get(&self, tenant: &str) -> Option<Learnt> {
        if self.format == Format::Groups || self.closed.load(Ordering::Acquire) {
            return None;
        }
        self.read().get(self.scope(tenant)).cloned()
    }

    /// The tenant's dictionary, if learnt, whether the file is open or closed.
    pub(super) fn learnt(&self, tenant: &str) -> Option<Learnt> {
        self.read().get(self.scope(tenant)).cloned()
    }

    /// Every dictionary learnt, by tenant (the file's footer), sorted.
    #[cfg(any(test, feature = "test-hooks"))]
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
    format: Format,
}

impl KeyBook {
    /// A key book for files of format 1 or 2 (test builds: to show that readers still read
    /// them).
    #[cfg(any(test, feature = "test-hooks"))]
    pub(super) fn records(shared: bool) -> Self {
        KeyBook {
            format: Format::Records { shared },
            ..KeyBook::default()
        }
    }

    pub(super) fn part(&self, p: &FileKey) -> Arc<PartKeys> {
        let mut m = self.parts.lock().expect("key book lock");
        m.entry(p.clone())
            .or_insert_with(|| Arc::new(PartKeys::generate(self.format)))
            .clone()
    }

    /// Keys for a later file of a partition and policy (not shared with the workers).
    pub(super) fn later(&self) -> Arc<PartKeys> {
        Arc::new(PartKeys::generate(self.format))
    }
}

/// Records a tenant's dictionary of a file is trained on (formats 1 and 2).
#[cfg(any(test, feature = "test-hooks"))]
pub(super) const TRAIN_ROWS: usize = crate::crypto::TRAIN_RECORDS;
/// Rows a format 3 file holds back before it is opened: a file that ends with fewer is written
/// whole at its close, its row count known (its bloom filters sized for it).
pub(super) const OPEN_ROWS: usize = 4096;

/// The dedupe key of an event: a digest of its tenant and id (two tenants may use the same id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct IdKey([u8; 16]);

impl IdKey {
    pub(super) fn of(tenant_id: &str, event_id: &str) -> Self {
        let key = crate::crypto::aad(&[tenant_id.as_bytes(), event_id.as_bytes()]);
        IdKey(sha256(&key)[..16].try_into().expect("16 bytes"))
    }
}
