//! Envelope encryption. A data key (DEK) per data file / landing segment / quarantine batch,
//! AES-256-GCM per record with a random 96-bit nonce, the DEK wrapped by a versioned KEK held
//! in a [`kms::Kms`]. Sealed layout: `nonce (12) || ciphertext || tag (16)`.
//!
//! Invariant: plaintext DEKs exist only inside [`DataKey`], which zeroizes on drop and never
//! prints its bytes.

pub mod kms;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
pub const ALGORITHM: &str = "AES-256-GCM";

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("authentication failed for {what}: the ciphertext, its context (AAD) or the key is not the one it was sealed with")]
    Authentication { what: String },
    #[error("sealed value for {what} is too short ({len} bytes)")]
    Truncated { what: String, len: usize },
    #[error("decompression failed for {what}")]
    Decompress { what: String },
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
        DataKey { bytes, id: format!("dek-{}", hex::encode(id)) }
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
        Cipher { aes: Aes256Gcm::new(&Key::<Aes256Gcm>::from(self.bytes)), dek_id: self.id.clone() }
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
    pub fn open(&self, sealed: &[u8], aad: &[u8], what: &dyn Fn() -> String) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Truncated { what: what(), len: sealed.len() });
        }
        let nonce = Nonce::from(<[u8; NONCE_LEN]>::try_from(&sealed[..NONCE_LEN]).unwrap());
        let body_end = sealed.len() - TAG_LEN;
        let tag = Tag::from(<[u8; TAG_LEN]>::try_from(&sealed[body_end..]).unwrap());
        let mut buf = sealed[NONCE_LEN..body_end].to_vec();
        match self.aes.decrypt_inout_detached(&nonce, aad, buf.as_mut_slice().into(), &tag) {
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
    aad(&[b"holdfast.record.v1", tenant_id.as_bytes(), event_id.as_bytes(), interaction_id.as_bytes(), dek_id.as_bytes()])
}

/// Compress-then-seal of a record (ciphertext does not compress, so compress first).
pub fn seal_record(cipher: &Cipher, compressor: &mut zstd::bulk::Compressor<'_>, record: &[u8], aad: &[u8], out: &mut Vec<u8>) {
    let compressed = compressor.compress(record).expect("zstd compression of an in-memory buffer");
    cipher.seal_into(&compressed, aad, out);
}

pub fn open_record(cipher: &Cipher, sealed: &[u8], aad: &[u8], what: &dyn Fn() -> String) -> Result<Vec<u8>, CryptoError> {
    let mut compressed = cipher.open(sealed, aad, what)?;
    let out = zstd::stream::decode_all(compressed.as_slice()).map_err(|_| CryptoError::Decompress { what: what() });
    compressed.zeroize();
    out
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
        assert!(!s.contains("171") && !s.to_lowercase().contains("abab"), "{s}");
    }

    #[test]
    fn moved_ciphertext_fails_authentication() {
        let k = DataKey::generate();
        let c = k.cipher();
        let a = record_aad("t1", "e1", "i1", k.id());
        let b = record_aad("t1", "e2", "i1", k.id());
        let sealed = c.seal(b"secret", &a);
        assert_eq!(c.open(&sealed, &a, &|| "x".into()).unwrap(), b"secret");
        assert!(matches!(c.open(&sealed, &b, &|| "x".into()), Err(CryptoError::Authentication { .. })));
        let other = DataKey::generate().cipher();
        assert!(other.open(&sealed, &a, &|| "x".into()).is_err());
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
            let mut z = zstd::bulk::Compressor::new(3).unwrap();
            let a = record_aad(&t, &e, "i", k.id());
            let mut out = Vec::new();
            seal_record(&c, &mut z, &record, &a, &mut out);
            prop_assert_eq!(open_record(&c, &out, &a, &|| "r".into()).unwrap(), record.clone());
            // any single flipped bit is detected
            if !out.is_empty() {
                let i = out.len() / 2;
                out[i] ^= 1;
                prop_assert!(open_record(&c, &out, &a, &|| "r".into()).is_err());
            }
        }
    }
}
