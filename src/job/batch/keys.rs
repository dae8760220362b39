//! What the batch's stages share about a data file before it exists: which file a record goes
//! to ([`FileKey`]), that file's DEK and dictionary ([`KeyBook`]), and the dedupe key of an
//! event ([`IdKey`]).

use crate::crypto::{Cipher, DataKey, Dictionary, sha256};
use crate::lake::layout::Partition;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// What one data file of a batch holds: one partition's records under one retention policy,
/// so that a file's records expire together and its storage lock frees it whole (files that
/// mixed policies would have to be rewritten when the shorter one ends).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct FileKey {
    pub(super) partition: Partition,
    pub(super) policy: Arc<str>,
}

/// Per-file keys of this batch: the file's DEK, and its dictionary once learnt
/// (`Some(None)`: learnt that there is too little to train on; plain zstd).
pub(super) struct PartKeys {
    pub(super) dek: DataKey,
    pub(super) cipher: Cipher,
    pub(super) dict: OnceLock<Option<Arc<Dictionary>>>,
}

/// Created by whichever thread meets the file first.
#[derive(Default)]
pub(super) struct KeyBook(Mutex<HashMap<FileKey, Arc<PartKeys>>>);

impl KeyBook {
    pub(super) fn part(&self, p: &FileKey) -> Arc<PartKeys> {
        let mut m = self.0.lock().expect("key book lock");
        m.entry(p.clone())
            .or_insert_with(|| {
                let dek = DataKey::generate();
                let cipher = dek.cipher();
                Arc::new(PartKeys {
                    dek,
                    cipher,
                    dict: OnceLock::new(),
                })
            })
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
