//! The `payload` column of data file format 3: each tenant's rows of a written batch, in
//! order, sealed in groups ([`crate::crypto::group`]) of at most `GROUP_RECORDS` records and
//! `GROUP_BYTES` bytes. Every row's payload names its group's ordinal in the file; the group's
//! first row also carries the sealed group, so a reader going through the file meets a group
//! before any other of its members.

use crate::crypto::Cipher;
use crate::crypto::group::{GROUP_BYTES, GROUP_RECORDS, GroupCompressor, Member, encode_payload};
use arrow::array::{BinaryArray, BinaryBuilder};
use std::collections::HashMap;

/// One row to seal: its tenant, ids and record.
pub struct ToSeal<'a> {
    pub tenant_id: &'a str,
    pub event_id: &'a str,
    pub interaction_id: &'a str,
    pub record: &'a [u8],
}

/// Seals a file's groups under its DEK, numbering them in the order they are written.
pub struct Grouper {
    cipher: Cipher,
    z: GroupCompressor,
    next: u32,
    sealed: Vec<u8>,
}

impl std::fmt::Debug for Grouper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Grouper({}, {} groups)", self.cipher.dek_id(), self.next)
    }
}

impl Grouper {
    pub fn new(cipher: Cipher) -> Self {
        Grouper {
            cipher,
            z: GroupCompressor::default(),
            next: 0,
            sealed: Vec::new(),
        }
    }

    pub fn dek_id(&self) -> &str {
        self.cipher.dek_id()
    }

    /// Groups written so far.
    #[cfg(test)]
    pub fn groups(&self) -> u32 {
        self.next
    }

    /// The payloads of `rows`, in their order.
    pub fn payloads(&mut self, rows: &[ToSeal<'_>]) -> BinaryArray {
        // each tenant's rows, tenants in the order they first appear
        let mut order: Vec<&str> = Vec::new();
        let mut by_tenant: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            by_tenant
                .entry(r.tenant_id)
                .or_insert_with(|| {
                    order.push(r.tenant_id);
                    Vec::new()
                })
                .push(i);
        }
        // per row: its group's ordinal, and the sealed group's range in `self.sealed` if first
        let mut slots: Vec<(u32, Option<std::ops::Range<usize>>)> = vec![(0, None); rows.len()];
        self.sealed.clear();
        for tenant in order {
            for chunk in chunks(&by_tenant[tenant], rows) {
                let ordinal = self.next;
                self.next += 1;
                let members: Vec<Member<'_>> = chunk
                    .iter()
                    .map(|&i| Member {
                        event_id: rows[i].event_id,
                        interaction_id: rows[i].interaction_id,
                        record: rows[i].record,
                    })
                    .collect();
                let start = self.sealed.len();
                self.z
                    .seal(&self.cipher, tenant, ordinal, &members, &mut self.sealed);
                slots[chunk[0]] = (ordinal, Some(start..self.sealed.len()));
                for &i in &chunk[1..] {
                    slots[i] = (ordinal, None);
                }
            }
        }
        let mut out = BinaryBuilder::with_capacity(rows.len(), self.sealed.len() + 3 * rows.len());
        let mut buf = Vec::new();
        for (ordinal, range) in slots {
            buf.clear();
            encode_payload(ordinal, range.map(|r| &self.sealed[r]), &mut buf);
            out.append_value(&buf);
        }
        out.finish()
    }
}

/// `indices` (one tenant's rows) cut into groups within the record and byte limits.
fn chunks<'i>(indices: &'i [usize], rows: &[ToSeal<'_>]) -> Vec<&'i [usize]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (k, &i) in indices.iter().enumerate() {
        let len = rows[i].record.len();
        let full = k - start >= GROUP_RECORDS || (k > start && bytes + len > GROUP_BYTES);
        if full {
            out.push(&indices[start..k]);
            (start, bytes) = (k, 0);
        }
        bytes += len;
    }
    if start < indices.len() {
        out.push(&indices[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::DataKey;
    use crate::crypto::group::{OpenGroup, decode_payload};
    use arrow::array::Array;

    #[test]
    fn each_tenant_groups_its_own_rows_and_the_first_row_carries_the_group() {
        let c = DataKey::generate().cipher();
        let ids: Vec<(String, String, String, Vec<u8>)> = (0..300)
            .map(|i| {
                let tenant = ["a", "b", "c"][i % 3].to_string();
                (tenant, format!("e{i}"), format!("i{i}"), vec![b'x'; i % 50])
            })
            .collect();
        let rows: Vec<ToSeal<'_>> = ids
            .iter()
            .map(|(t, e, i, r)| ToSeal {
                tenant_id: t,
                event_id: e,
                interaction_id: i,
                record: r,
            })
            .collect();
        let mut g = Grouper::new(c.clone());
        let p = g.payloads(&rows);
        assert_eq!(p.len(), 300);
        // 100 rows a tenant: one group of 100 each
        assert_eq!(g.groups(), 3);
        let mut carried = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            let (ordinal, sealed) = decode_payload(p.value(i)).unwrap();
            if let Some(s) = sealed {
                let open = OpenGroup::open(&c, row.tenant_id, ordinal, s, &|| "g".into());
                assert!(carried.insert(ordinal, open.unwrap()).is_none());
            }
            let group = carried.get(&ordinal).expect("carried before its members");
            assert_eq!(
                group.record(row.event_id, row.interaction_id),
                Some(row.record)
            );
        }
        // a second batch goes on numbering
        let more = g.payloads(&rows[..1]);
        assert_eq!(decode_payload(more.value(0)).unwrap().0, 3);
    }

    #[test]
    fn groups_end_at_the_record_and_byte_limits() {
        let big = vec![0u8; GROUP_BYTES / 2 + 1];
        let small = vec![0u8; 10];
        let rows: Vec<ToSeal<'_>> = (0..5)
            .map(|i| ToSeal {
                tenant_id: "t",
                event_id: "e",
                interaction_id: "i",
                record: if i < 3 { &big } else { &small },
            })
            .collect();
        let idx: Vec<usize> = (0..5).collect();
        let lens: Vec<usize> = chunks(&idx, &rows).iter().map(|c| c.len()).collect();
        assert_eq!(lens, vec![1, 1, 3]);
        let many: Vec<usize> = (0..GROUP_RECORDS * 2 + 1).map(|_| 3).collect();
        let rows: Vec<ToSeal<'_>> = many
            .iter()
            .map(|_| ToSeal {
                tenant_id: "t",
                event_id: "e",
                interaction_id: "i",
                record: &small,
            })
            .collect();
        let idx: Vec<usize> = (0..rows.len()).collect();
        let lens: Vec<usize> = chunks(&idx, &rows).iter().map(|c| c.len()).collect();
        assert_eq!(lens, vec![GROUP_RECORDS, GROUP_RECORDS, 1]);
    }
}
