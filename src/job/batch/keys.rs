//! What the batch's stages share about a data file before it exists: which file a record goes
//! to ([`FileKey`]), that file's DEK and dictionary ([`KeyBook`]), and the dedupe key of an
//! event ([`IdKey`]).

use crate::crypto::{Cipher, DataKey, Dictionary, sha256};
use crate::lake::layout::Partition;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// What one data file of a batch holds: one partition's records under one retention policy,
/// so that a file's records expire together and its storage lock frees it whole (files that
/// mixed policies would have to be rewritten when the shorter one ends).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct FileKey {
    pub(super) partition: Partition,
    pub(super) policy: Arc<str>,
}

/// Per-file keys of this batch: the file's DEK, and its dictionary once learnt.
pub(super) struct PartKeys {
    pub(super) dek: DataKey,
    pub(super) cipher: Cipher,
    pub(super) dict: DictCell,
}

impl PartKeys {
    /// A new DEK; no dictionary yet.
    pub(super) fn generate() -> Self {
        let dek = DataKey::generate();
        let cipher = dek.cipher();
        PartKeys {
            dek,
            cipher,
            dict: DictCell::default(),
        }
    }
}

/// A file's dictionary as the decode workers see it: unknown while the sink learns it, then
/// learnt (`Some(None)`: too little to train on; plain zstd); and unknown again once the file
/// is closed ([`DictCell::close`]), so that the workers hand the sink plaintext for any later
/// file of the same partition and policy, which has a DEK (and dictionary) of its own.
#[derive(Default)]
pub(super) struct DictCell {
    learnt: OnceLock<Option<Arc<Dictionary>>>,
    closed: AtomicBool,
}

impl DictCell {
    /// The dictionary to seal with, while the file is open and its dictionary is learnt.
    pub(super) fn get(&self) -> Option<&Option<Arc<Dictionary>>> {
        if self.closed.load(Ordering::Acquire) {
            None
        } else {
            self.learnt.get()
        }
    }

    /// The dictionary, if learnt, whether the file is open or closed.
    pub(super) fn learnt(&self) -> Option<&Option<Arc<Dictionary>>> {
        self.learnt.get()
    }

    /// Publishes what was learnt (once).
    pub(super) fn set(&self, dict: Option<Arc<Dictionary>>) {
        let _ = self.learnt.set(dict);
    }

    /// The file is closed: workers stop sealing with it, and its compression tables go (a
    /// worker that had already taken it still seals correctly, from the raw dictionary).
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(Some(d)) = self.learnt.get() {
            d.release_tables();
        }
    }
}

/// The first file of each partition and policy (the one the workers seal for); created by
/// whichever thread meets it first.
#[derive(Default)]
pub(super) struct KeyBook(Mutex<HashMap<FileKey, Arc<PartKeys>>>);

impl KeyBook {
    pub(super) fn part(&self, p: &FileKey) -> Arc<PartKeys> {
        let mut m = self.0.lock().expect("key book lock");
        m.entry(p.clone())
            .or_insert_with(|| Arc::new(PartKeys::generate()))
            .clone()
    }
}

/// Records a file's dictionary is trained on.
pub(super) const TRAIN_ROWS: usize = 256;

/// The dedupe key of an event: a digest of its tenant and id (two tenants may use the same id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct IdKey([u8; 16]);

impl IdKey {
    pub(super) fn of(tenant_id: &str, event_id: &str) -> Self {
        let key = crate::crypto::aad(&[tenant_id.as_bytes(), event_id.as_bytes()]);
        IdKey(sha256(&key)[..16].try_into().expect("16 bytes"))
    }
}
