//! Opening the records of one data file, whatever its format ([`Records`]): format 1 and 2
//! seal each record alone (with its tenant's dictionary, [`FileDictionaries`]), format 3 seals
//! groups of a tenant's records ([`crate::crypto::group`]). Every reader of records (query
//! decryption, deep verify, a sweep's rewrite) opens a row's record here, from the row's
//! tenant, event and interaction ids and its `payload`.

use super::{FileDictionaries, footer};
use crate::crypto::group::{OpenGroup, decode_payload};
use crate::crypto::{Cipher, CryptoError, Plaintext, open_record, record_aad};
use crate::lake::LakeError;
use parquet::file::metadata::FileMetaData;
use std::collections::{HashMap, VecDeque};

/// Opened groups a reader keeps, least recently used out. Rows of different tenants interleave
/// in a file (each tenant's rows sit in its own groups), and a scan may read two ranges of a
/// file at once: with 4, six interleaved tenants reopened (and decompressed) a group for
/// almost every row. Each holds at most `GROUP_BYTES` of plaintext.
const OPEN_GROUPS: usize = 16;

/// A row as a record is opened for it.
#[derive(Debug, Clone, Copy)]
pub struct RowIds<'a> {
    pub tenant_id: &'a str,
    pub event_id: &'a str,
    pub interaction_id: &'a str,
}

enum Layout {
    /// Formats 1 and 2: each record sealed alone.
    Records(FileDictionaries),
    /// Format 3: sealed groups by ordinal, as rows carrying them were met, and the groups
    /// opened last.
    Groups {
        cipher: Cipher,
        sealed: HashMap<u32, Vec<u8>>,
        open: VecDeque<(u32, String, OpenGroup)>,
    },
}

/// The records of one data file, opened with its DEK.
pub struct Records {
    object: String,
    layout: Layout,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Records({})", self.object)
    }
}

impl Records {
    /// The file's records as its footer describes them (checked by [`footer::check`] here);
    /// `cipher` is the file's DEK, `object` names the file in every error.
    pub fn from_footer(md: &FileMetaData, cipher: Cipher, object: &str) -> Result<Self, LakeError> {
        footer::check(md, object)?;
        let layout = match footer::value(md, footer::VERSION_KEY) {
            Some("1" | "2") => Layout::Records(FileDictionaries::from_footer(md, cipher, object)?),
            _ => Layout::Groups {
                cipher,
                sealed: HashMap::new(),
                open: VecDeque::new(),
            },
        };
        Ok(Records {
            object: object.to_string(),
            layout,
        })
    }

    /// Keeps the group a `payload` carries (format 3; nothing otherwise). A reader that does
    /// not go through the file in order gives every carrier it needs here first.
    pub fn carry(&mut self, payload: &[u8]) {
        if let Layout::Groups { sealed, .. } = &mut self.layout
            && let Some((ordinal, Some(group))) = decode_payload(payload)
        {
            sealed.entry(ordinal).or_insert_with(|| group.to_vec());
        }
    }

    /// The group ordinal a format 3 `payload` names, when its group is not kept yet.
    pub fn missing(&self, payload: &[u8]) -> Option<u32> {
        match &self.layout {
            Layout::Groups { sealed, .. } => {
                let (ordinal, carried) = decode_payload(payload)?;
                (carried.is_none() && !sealed.contains_key(&ordinal)).then_some(ordinal)
            }
            Layout::Records(_) => None,
        }
    }

    /// Keeps the groups `wanted` names from the file's `bytes` (a reader that met rows whose
    /// groups' first rows it did not see).
    pub fn carry_from_file(
        &mut self,
        bytes: bytes::Bytes,
        wanted: &std::collections::BTreeSet<u32>,
    ) -> Result<(), LakeError> {
        use arrow::array::AsArray;
        let object = self.object.clone();
        let err = |e| LakeError::parquet(&object, e);
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(err)?;
        let at = super::SCHEMA.index_of("payload").expect("column");
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [at]);
        for b in builder.with_projection(mask).build().map_err(err)? {
            let b = b.map_err(|e| LakeError::Corrupt {
                object: object.clone(),
                problem: e.to_string(),
            })?;
            let payload = b.column(0).as_binary::<i32>();
            for p in payload.iter().flatten() {
                if matches!(decode_payload(p), Some((o, Some(_))) if wanted.contains(&o)) {
                    self.carry(p);
                }
            }
        }
        Ok(())
    }

    /// Forgets the sealed groups kept so far (a reader bounds its memory between batches).
    pub fn forget(&mut self) {
        if let Layout::Groups { sealed, .. } = &mut self.layout {
            sealed.clear();
        }
    }

    /// Closes the groups opened so far (their plaintext is wiped) and forgets the sealed
    /// ones: what a reader does with a file it has moved on from, so that the files it keeps
    /// keys for do not each keep opened groups.
    pub fn close(&mut self) {
        if let Layout::Groups { sealed, open, .. } = &mut self.layout {
            sealed.clear();
            open.clear();
        }
    }

    /// Groups opened and kept (format 3; 0 otherwise).
    #[cfg(test)]
    pub fn open_groups(&self) -> usize {
        match &self.layout {
            Layout::Groups { open, .. } => open.len(),
            Layout::Records(_) => 0,
        }
    }

    /// The record of `row`, whose stored `payload` is given; errors name the event and file.
    pub fn open(&mut self, row: RowIds<'_>, payload: &[u8]) -> Result<Plaintext, CryptoError> {
        let what = || format!("event {} in {}", row.event_id, self.object);
        match &mut self.layout {
            Layout::Records(dicts) => {
                let aad = record_aad(
                    row.tenant_id,
                    row.event_id,
                    row.interaction_id,
                    dicts.cipher().dek_id(),
                );
                let dict = dicts.for_tenant(row.tenant_id)?;
                let plain = open_record(dicts.cipher(), dict.as_deref(), payload, &aad, &what)?;
                Ok(Plaintext::new(plain))
            }
            Layout::Groups {
                cipher,
                sealed,
                open,
            } => {
                let (ordinal, carried) =
                    decode_payload(payload).ok_or_else(|| CryptoError::Truncated {
                        what: what(),
                        len: payload.len(),
                    })?;
                if let Some(group) = carried {
                    sealed.entry(ordinal).or_insert_with(|| group.to_vec());
                }
                let at = open
                    .iter()
                    .position(|(o, t, _)| *o == ordinal && t == row.tenant_id);
                let at = match at {
                    Some(at) => at,
                    None => {
                        let bytes = sealed
                            .get(&ordinal)
                            .ok_or_else(|| CryptoError::NotInGroup { what: what() })?;
                        let g = OpenGroup::open(cipher, row.tenant_id, ordinal, bytes, &what)?;
                        if open.len() >= OPEN_GROUPS {
                            open.pop_front();
                        }
                        open.push_back((ordinal, row.tenant_id.to_string(), g));
                        open.len() - 1
                    }
                };
                let record = open[at]
                    .2
                    .record(row.event_id, row.interaction_id)
                    .ok_or_else(|| CryptoError::NotInGroup { what: what() })?;
                Ok(Plaintext::new(record.to_vec()))
            }
        }
    }
}
