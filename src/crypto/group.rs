//! Sealed groups of records (data file format 3): the records of one tenant in one data file
//! are compressed together in groups of up to [`GROUP_RECORDS`] and sealed as one value, so
//! that zstd finds what records share and a group pays one nonce and tag instead of one per
//! record.
//!
//! A group's plaintext, before zstd: the member count (u32 big-endian), then per member its
//! tag (16 bytes, [`member_tag`]) and its record's length (u32 big-endian), then the records
//! one after the other. Sealed as `nonce || ciphertext || tag` under the file's DEK with AAD
//! (`holdfast.group.v1`, tenant, DEK id, the group's ordinal in the file). The AAD binds a
//! group to its tenant, file and place; the member tags, inside the authenticated plaintext,
//! bind each record to its event and interaction: a row opens only the record whose tag its
//! own ids give ([`OpenGroup::record`]), so a row pointed at another group, or at another
//! member of its own, finds nothing.

use super::{Cipher, CryptoError, aad, sha256};
use zeroize::{Zeroize, Zeroizing};

/// Records in one group at most.
pub const GROUP_RECORDS: usize = 128;
/// Plaintext bytes of one group at most (a larger record is a group of its own).
pub const GROUP_BYTES: usize = 256 << 10;
/// zstd level of groups: level 1 took fewer bytes than 3 on groups of the benchmark's events
/// (211 against 216 a record) at 1.4 times the speed.
pub const GROUP_LEVEL: i32 = 1;
/// The AAD scheme of groups (the data file footer names it).
pub const GROUP_AAD: &str = "holdfast.group.v1";
/// A group this large once decompressed is refused (no writer makes one).
const MAX_PLAIN: usize = 256 << 20;
const TAG: usize = 16;

/// The tag of a member: the first 16 bytes of SHA-256 over its event and interaction ids.
pub fn member_tag(event_id: &str, interaction_id: &str) -> [u8; TAG] {
    let digest = sha256(&aad(&[
        b"holdfast.group.member.v1",
        event_id.as_bytes(),
        interaction_id.as_bytes(),
    ]));
    digest[..TAG].try_into().expect("16 bytes")
}

fn group_aad(tenant_id: &str, dek_id: &str, ordinal: u32) -> Vec<u8> {
    aad(&[
        GROUP_AAD.as_bytes(),
        tenant_id.as_bytes(),
        dek_id.as_bytes(),
        &ordinal.to_be_bytes(),
    ])
}

/// One member of a group being sealed.
pub struct Member<'a> {
    pub event_id: &'a str,
    pub interaction_id: &'a str,
    pub record: &'a [u8],
}

/// One thread's zstd context for groups.
pub struct GroupCompressor {
    cctx: zstd::zstd_safe::CCtx<'static>,
    plain: Vec<u8>,
    compressed: Vec<u8>,
}

impl Default for GroupCompressor {
    fn default() -> Self {
        GroupCompressor {
            cctx: super::zstd_context(GROUP_LEVEL),
            plain: Vec::new(),
            compressed: Vec::new(),
        }
    }
}

impl GroupCompressor {
    /// Compresses and seals `members` (one tenant's, at least one) as group `ordinal` of the
    /// file whose DEK `cipher` holds; appends the sealed group to `out`. The plaintext copies
    /// are zeroized.
    pub fn seal(
        &mut self,
        cipher: &Cipher,
        tenant_id: &str,
        ordinal: u32,
        members: &[Member<'_>],
        out: &mut Vec<u8>,
    ) {
        let p = &mut self.plain;
        p.clear();
        p.extend_from_slice(&(members.len() as u32).to_be_bytes());
        for m in members {
            p.extend_from_slice(&member_tag(m.event_id, m.interaction_id));
            p.extend_from_slice(&(m.record.len() as u32).to_be_bytes());
        }
        for m in members {
            p.extend_from_slice(m.record);
        }
        self.compressed.clear();
        self.compressed
            .reserve(zstd::zstd_safe::compress_bound(p.len()));
        self.cctx
            .compress2(&mut self.compressed, p)
            .expect("zstd into a buffer of compress_bound size");
        p.zeroize();
        let aad = group_aad(tenant_id, cipher.dek_id(), ordinal);
        cipher.seal_into(&self.compressed, &aad, out);
        self.compressed.zeroize();
    }
}

/// An opened group: its plaintext (zeroized on drop) and where each member's record is.
pub struct OpenGroup {
    plain: Zeroizing<Vec<u8>>,
    members: Vec<([u8; TAG], std::ops::Range<usize>)>,
}

impl std::fmt::Debug for OpenGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenGroup({} members)", self.members.len())
    }
}

impl OpenGroup {
    /// Opens group `ordinal` of `tenant_id` sealed under `cipher`; `what` names it in errors.
    pub fn open(
        cipher: &Cipher,
        tenant_id: &str,
        ordinal: u32,
        sealed: &[u8],
        what: &dyn Fn() -> String,
    ) -> Result<Self, CryptoError> {
        let aad = group_aad(tenant_id, cipher.dek_id(), ordinal);
        let compressed = Zeroizing::new(cipher.open(sealed, &aad, what)?);
        let bad = || CryptoError::Decompress { what: what() };
        let size = zstd::zstd_safe::get_frame_content_size(&compressed)
            .ok()
            .flatten()
            .filter(|&n| n as usize <= MAX_PLAIN)
            .ok_or_else(bad)?;
        let mut plain = Zeroizing::new(Vec::with_capacity(size as usize));
        zstd::zstd_safe::decompress(&mut *plain, &compressed).map_err(|_| bad())?;
        let members = parse(&plain).ok_or_else(bad)?;
        Ok(OpenGroup { plain, members })
    }

    /// The record of the member with these ids, if the group has it.
    pub fn record(&self, event_id: &str, interaction_id: &str) -> Option<&[u8]> {
        let tag = member_tag(event_id, interaction_id);
        let (_, range) = self.members.iter().find(|(t, _)| *t == tag)?;
        Some(&self.plain[range.clone()])
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The members' tags and record ranges; `None` if the layout does not add up.
fn parse(plain: &[u8]) -> Option<Vec<([u8; TAG], std::ops::Range<usize>)>> {
    let count = u32_at(plain, 0)? as usize;
    let mut at = 4usize.checked_add(count.checked_mul(TAG + 4)?)?;
    if count == 0 || at > plain.len() {
        return None;
    }
    let mut members = Vec::with_capacity(count);
    for i in 0..count {
        let entry = 4 + i * (TAG + 4);
        let tag: [u8; TAG] = plain[entry..entry + TAG].try_into().ok()?;
        let len = u32_at(plain, entry + TAG)? as usize;
        let end = at.checked_add(len).filter(|&e| e <= plain.len())?;
        members.push((tag, at..end));
        at = end;
    }
    (at == plain.len()).then_some(members)
}

/// A data file row's `payload` in format 3: its group's ordinal (LEB128), followed, on the
/// group's first row only, by the sealed group.
pub fn encode_payload(ordinal: u32, sealed: Option<&[u8]>, out: &mut Vec<u8>) {
    let mut v = ordinal;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    if let Some(s) = sealed {
        out.extend_from_slice(s);
    }
}

/// The group ordinal of a format 3 `payload`, and the sealed group if this row carries it.
pub fn decode_payload(payload: &[u8]) -> Option<(u32, Option<&[u8]>)> {
    let mut v: u32 = 0;
    for (i, byte) in payload.iter().enumerate().take(5) {
        v |= u32::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            let rest = &payload[i + 1..];
            return Some((v, (!rest.is_empty()).then_some(rest)));
        }
    }
    None
}

#[cfg(test)]
mod tests;
