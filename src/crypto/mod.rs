//! Envelope encryption. A data key (DEK) per data file / landing segment / quarantine batch,
//! AES-256-GCM per record with a random 96-bit nonce, the DEK wrapped by a versioned KEK held
//! in a [`kms::Kms`]. Sealed layout: `nonce (12) || ciphertext || tag (16)`.
//!
//! Invariant: plaintext DEKs exist only inside [`DataKey`], which zeroizes on drop and never
//! prints its bytes.

mod dictionary;
pub mod group;
mod index_keys;
pub use dictionary::{DICTIONARY_BYTES, Dictionary, DictionaryScope, RECORD_LEVEL, TRAIN_RECORDS};
pub use index_keys::IndexKeyCache;
pub mod cache;
pub mod kms;
mod tables;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
pub const ALGORITHM: &str = "AES-256-GCM";

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error(
        "authentication failed for {what}: the ciphertext, its context (AAD) or the key is not the one it was sealed with"
    )]
    Authentication { what: String },
    #[error("sealed value for {what} is too short ({len} bytes)")]
    Truncated { what: String, len: usize },
    #[error("decompression failed for {what}")]
    Decompress { what: String },
    #[error("{what} is not in the sealed group its row names")]
    NotInGroup { what: String },
    #[error("{what} is sealed under DEK {dek_id}, not the DEK this reader was given")]
    OtherKey { what: String, dek_id: String },
}

/// A 256-bit data key. Zeroized on drop; `Debug` shows only its id.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey {
    bytes: [u8; 32],
    #[zeroize(skip)]
    id: String,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({})", self.id)
    }
}

impl DataKey {
    /// A fresh random key with a fresh random id (`dek-` + 32 hex digits).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        DataKey {
            bytes,
            id: format!("dek-{}", hex::encode(id)),
        }
    }
    pub fn from_parts(id: String, bytes: [u8; 32]) -> Self {
        DataKey { bytes, id }
    }
    pub fn id(&self) -> &str {
        &self.id
    }
    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.bytes
    }
    pub fn cipher(&self) -> Cipher {
        Cipher {
            aes: Aes256Gcm::new(&Key::<Aes256Gcm>::from(self.bytes)),
            dek_id: self.id.clone(),
        }
    }
}

/// A record's plaintext on its way to being sealed: zeroized on drop, and `Debug` shows only
/// its length, so a row that is printed or panics never shows it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Plaintext(zeroize::Zeroizing<Vec<u8>>);

impl Plaintext {
    pub fn new(bytes: Vec<u8>) -> Self {
        Plaintext(zeroize::Zeroizing::new(bytes))
    }
}

impl std::ops::Deref for Plaintext {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Plaintext({} bytes)", self.0.len())
    }
}

/// An AES-256-GCM cipher bound to one DEK (key schedule computed once).
#[derive(Clone)]
pub struct Cipher {
    aes: Aes256Gcm,
    dek_id: String,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cipher({})", self.dek_id)
    }
}

impl Cipher {
    pub fn dek_id(&self) -> &str {
        &self.dek_id
    }

    /// Appends `nonce || ciphertext || tag` of `plaintext` to `out`.
    pub fn seal_into(&self, plaintext: &[u8], aad: &[u8], out: &mut Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let start = out.len();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let nonce = Nonce::from(nonce);
        let tag = self
            .aes
            .encrypt_inout_detached(&nonce, aad, (&mut out[start + NONCE_LEN..]).into())
            .expect("AES-GCM input within limits");
        out.extend_from_slice(tag.as_slice());
    }

    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + NONCE_LEN + TAG_LEN);
        self.seal_into(plaintext, aad, &mut out);
        out
    }

    /// Opens a sealed value; `what` names it in errors (never its content).
    pub fn open(
        &self,
        sealed: &[u8],
        aad: &[u8],
        what: &dyn Fn() -> String,
    ) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Truncated {
                what: what(),
                len: sealed.len(),
            });
        }
        let nonce = Nonce::from(<[u8; NONCE_LEN]>::try_from(&sealed[..NONCE_LEN]).unwrap());
        let body_end = sealed.len() - TAG_LEN;
        let tag = Tag::from(<[u8; TAG_LEN]>::try_from(&sealed[body_end..]).unwrap());
        let mut buf = sealed[NONCE_LEN..body_end].to_vec();
        match self
            .aes
            .decrypt_inout_detached(&nonce, aad, buf.as_mut_slice().into(), &tag)
        {
            Ok(()) => Ok(buf),
            Err(_) => {
                buf.zeroize();
                Err(CryptoError::Authentication { what: what() })
            }
        }
    }
}

/// Associated data: length-prefixed parts, so that no two different part lists encode alike.
pub fn aad(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// AAD of one record's payload in a data file: binds the ciphertext to its tenant, event,
/// interaction and the file's DEK, so a ciphertext moved to another row or file fails.
pub fn record_aad(tenant_id: &str, event_id: &str, interaction_id: &str, dek_id: &str) -> Vec<u8> {
    aad(&[
        b"holdfast.record.v1",
        tenant_id.as_bytes(),
        event_id.as_bytes(),
        interaction_id.as_bytes(),
        dek_id.as_bytes(),
    ])
}

/// One thread's zstd context for record payloads.
pub struct RecordCompressor {
    cctx: zstd::zstd_safe::CCtx<'static>,
    /// For a dictionary's prepared tables.
    prepared: tables::Context,
    buf: Vec<u8>,
}

/// A zstd compression context at `level` (records, groups).
pub(crate) fn zstd_context(level: i32) -> zstd::zstd_safe::CCtx<'static> {
    let mut cctx = zstd::zstd_safe::CCtx::create();
    cctx.set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(level))
        .expect("valid level");
    cctx
}

impl Default for RecordCompressor {
    fn default() -> Self {
        RecordCompressor {
            cctx: zstd_context(RECORD_LEVEL),
            prepared: tables::Context::default(),
            buf: Vec::new(),
        }
    }
}

impl RecordCompressor {
    fn compress(&mut self, dict: Option<&Dictionary>, src: &[u8]) -> &[u8] {
        self.buf.clear();
        self.buf.reserve(zstd::zstd_safe::compress_bound(src.len()));
        let r = match dict {
            Some(d) => d.compress((&mut self.prepared, &mut self.cctx), &mut self.buf, src),
            None => self.cctx.compress2(&mut self.buf, src),
        };
        r.expect("zstd into a buffer of compress_bound size");
        &self.buf
    }
}

/// Compress-then-seal of a record (ciphertext does not compress, so compress first).
pub fn seal_record(
    cipher: &Cipher,
    z: &mut RecordCompressor,
    dict: Option<&Dictionary>,
    record: &[u8],
    aad: &[u8],
    out: &mut Vec<u8>,
) {
    let compressed = z.compress(dict, record);
    cipher.seal_into(compressed, aad, out);
    z.buf.zeroize();
}

pub fn open_record(
    cipher: &Cipher,
    dict: Option<&zstd::dict::DecoderDictionary<'_>>,
    sealed: &[u8],
    aad: &[u8],
    what: &dyn Fn() -> String,
) -> Result<Vec<u8>, CryptoError> {
    let mut compressed = cipher.open(sealed, aad, what)?;
    let out = (|| -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut out = Vec::new();
        match dict {
            Some(d) => {
                zstd::stream::read::Decoder::with_prepared_dictionary(compressed.as_slice(), d)?
                    .read_to_end(&mut out)?
            }
            None => {
                zstd::stream::read::Decoder::new(compressed.as_slice())?.read_to_end(&mut out)?
            }
        };
        Ok(out)
    })()
    .map_err(|_| CryptoError::Decompress { what: what() });
    compressed.zeroize();
    out
}

/// HMAC-SHA-256 (RFC 2104), from the `hmac` crate (its key state is zeroized on drop).
pub fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The normal form a blind index hashes: e-mail lower-cased; a phone number as E.164
/// (`+` and digits; 10 digits are taken as North American and get `+1`); `tel:`/`sip:`/
/// `mailto:` dropped; anything else trimmed and lower-cased.
pub fn normalize_address(raw: &str) -> String {
    let s = raw.trim();
    let s = ["tel:", "sip:", "mailto:"]
        .iter()
        .find_map(|p| s.strip_prefix(p))
        .unwrap_or(s)
        .trim();
    if s.contains('@') {
        return s.to_lowercase();
    }
    let phoneish = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c))
        && s.chars().any(|c| c.is_ascii_digit());
    if phoneish {
        let digits: String = s.chars().filter(char::is_ascii_digit).collect();
        return match (s.starts_with('+'), digits.len()) {
            (true, _) => format!("+{digits}"),
            (false, 10) => format!("+1{digits}"),
            (false, 11) if digits.starts_with('1') => format!("+{digits}"),
            _ => format!("+{digits}"),
        };
    }
    s.to_lowercase()
}

/// Bytes of a blind index: HMAC-SHA-256 truncated to 128 bits (RFC 2104 section 5), plenty
/// for an equality index and half the bytes per address.
pub const BLIND_INDEX_BYTES: usize = 16;

/// The blind index of an address under a tenant's index key.
pub fn blind_index(index_key: &[u8; 32], address: &str) -> [u8; BLIND_INDEX_BYTES] {
    hmac_sha256(index_key, normalize_address(address).as_bytes())[..BLIND_INDEX_BYTES]
        .try_into()
        .expect("16 of 32 bytes")
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn debug_never_shows_key_bytes() {
        let k = DataKey::from_parts("dek-x".into(), [0xAB; 32]);
        let s = format!("{k:?} {:?}", k.cipher());
        assert!(
            !s.contains("171") && !s.to_lowercase().contains("abab"),
            "{s}"
        );
    }

    #[test]
    fn moved_ciphertext_fails_authentication() {
        let k = DataKey::generate();
        let c = k.cipher();
        let a = record_aad("t1", "e1", "i1", k.id());
        let b = record_aad("t1", "e2", "i1", k.id());
        let sealed = c.seal(b"secret", &a);
        assert_eq!(c.open(&sealed, &a, &|| "x".into()).unwrap(), b"secret");
        assert!(matches!(
            c.open(&sealed, &b, &|| "x".into()),
            Err(CryptoError::Authentication { .. })
        ));
        let other = DataKey::generate().cipher();
        assert!(other.open(&sealed, &a, &|| "x".into()).is_err());
    }

    /// RFC 4231 test case 1 (a 20-byte key: HMAC pads it with zeros to the block size, as
    /// ours is padded to 32 bytes), and a blind-index value computed before the `hmac` crate
    /// replaced the hand-written construction: stored blind indexes must not change.
    #[test]
    fn hmac_matches_rfc_4231_and_earlier_blind_indexes() {
        let mut key = [0u8; 32];
        key[..20].copy_from_slice(&[0x0b; 20]);
        assert_eq!(
            hex::encode(hmac_sha256(&key, b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex::encode(hmac_sha256(&[7u8; 32], b"+15550198765")),
            "cacae5935b4085922db3472c232115ac95ffd86a2b252ba1f7466d18af9107e0"
        );
        assert_eq!(
            hex::encode(blind_index(&[7u8; 32], "tel:+1 555 019 8765")),
            "cacae5935b4085922db3472c232115ac"
        );
    }

    #[test]
    fn hmac_matches_rfc_4231_shape_and_addresses_normalise() {
        // RFC 4231 test case 2 uses a 4-byte key; our keys are 32 bytes, so check the
        // construction against a key padded the way HMAC pads it (zeros to the block size).
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        assert_eq!(
            hex::encode(hmac_sha256(&key, b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(normalize_address("+1 555 019 8765"), "+15550198765");
        assert_eq!(normalize_address("tel:+15550198765"), "+15550198765");
        assert_eq!(normalize_address("(555) 019-8765"), "+15550198765");
        assert_eq!(normalize_address("15550198765"), "+15550198765");
        assert_eq!(
            normalize_address(" Client.One@Example.NET "),
            "client.one@example.net"
        );
        let k = [7u8; 32];
        assert_eq!(
            blind_index(&k, "+1 555 019 8765"),
            blind_index(&k, "tel:+15550198765")
        );
        assert_ne!(
            blind_index(&k, "+15550198765"),
            blind_index(&[8u8; 32], "+15550198765"),
            "per-tenant keys"
        );
    }

    #[test]
    fn aad_parts_are_unambiguous() {
        assert_ne!(aad(&[b"ab", b"c"]), aad(&[b"a", b"bc"]));
    }

    proptest! {
        #[test]
        fn record_round_trip(record in proptest::collection::vec(any::<u8>(), 0..4096), t in "[a-z0-9]{1,12}", e in "[a-z0-9-]{1,40}") {
            let k = DataKey::generate();
            let c = k.cipher();
            let mut z = RecordCompressor::default();
            let a = record_aad(&t, &e, "i", k.id());
            let mut out = Vec::new();
            seal_record(&c, &mut z, None, &record, &a, &mut out);
            prop_assert_eq!(open_record(&c, None, &out, &a, &|| "r".into()).unwrap(), record.clone());
            // any single flipped bit is detected
            if !out.is_empty() {
                let i = out.len() / 2;
                out[i] ^= 1;
                prop_assert!(open_record(&c, None, &out, &a, &|| "r".into()).is_err());
            }
        }
    }
}
