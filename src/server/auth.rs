//! Who is calling: bearer tokens, stored hashed in a tokens file outside the store.
//!
//! The file (TOML, mode 0600, never inside the store) lists one `[[token]]` per sending
//! platform or person: the SHA-256 of the token, the principal it stands for, and for a
//! platform the tenant and payload shape its events carry. The token decides the tenant: a
//! request that names another is refused. Nothing a request sends chooses its principal.

use crate::sources::SourceKind;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

/// One caller, as the tokens file maps its token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// The principal's name (a sending platform's, or a person's user name in the store's
    /// access policy).
    pub principal: String,
    /// The tenant whose events this token sends (platform tokens).
    #[serde(default)]
    pub tenant: Option<String>,
    /// The payload shape its events have (`auto` when unset: each line is recognised).
    #[serde(default)]
    pub source: Option<SourceKind>,
    /// For a platform that signs its bodies: the shared secret. Its requests must then carry
    /// `X-Holdfast-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, with
    /// `t` within [`SIGNATURE_WINDOW_SECS`] of the server's clock.
    #[serde(default, skip_serializing)]
    pub hmac_secret: Option<String>,
}

/// How far a signature's timestamp may be from the server's clock (replays older than this
/// are refused; within it, the idempotency keys and the batch's dedupe absorb them).
pub const SIGNATURE_WINDOW_SECS: i64 = 300;

/// Checks `X-Holdfast-Signature` over `body` with `secret` at `now` (unix seconds): `Err`
/// says what is wrong, never the secret or the expected value.
pub fn check_signature(
    secret: &str,
    header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), String> {
    use hmac::{KeyInit, Mac};
    let header = header.ok_or("this token's requests must be signed (X-Holdfast-Signature)")?;
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = hex::decode(x).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err("X-Holdfast-Signature must be t=<unix seconds>,v1=<hex>".into());
    };
    if (now - t).abs() > SIGNATURE_WINDOW_SECS {
        return Err(format!(
            "the signature's timestamp is more than {SIGNATURE_WINDOW_SECS} s from the server's clock"
        ));
    }
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    // constant time
    mac.verify_slice(&v1)
        .map_err(|_| "the body's signature does not match".to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<Principal>,
}

/// The tokens a server accepts, by hash.
#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Principal>,
}

/// The SHA-256 of a token, as the tokens file records it.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Tokens {
    /// Reads the tokens file: refused when group or others may read it, or when it is
    /// inside the store (`store`).
    pub fn load(path: &Path, store: &crate::storage::StoreUrl) -> Result<Self, String> {
        use std::os::unix::fs::PermissionsExt;
        let named = |e: std::io::Error| format!("tokens file {}: {e}", path.display());
        // the operator's own secrets file, like the keyring: read here, never through a store
        #[allow(clippy::disallowed_methods)]
        let meta = std::fs::metadata(path).map_err(named)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "tokens file {} has permissions {mode:o}; it must be 0600 (run: chmod 600 {})",
                path.display(),
                path.display()
            ));
        }
        crate::store::keyring_apart(path, store).map_err(|_| {
            format!(
                "tokens file {} is inside the store {store}; keep secrets apart from the data",
                path.display()
            )
        })?;
        #[allow(clippy::disallowed_methods)]
        let text = std::fs::read_to_string(path).map_err(named)?;
        Self::parse(&text).map_err(|e| format!("tokens file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut by_hash = HashMap::new();
        for p in file.token {
            let mut key = [0u8; 32];
            hex::decode_to_slice(&p.sha256, &mut key)
                .map_err(|_| format!("token of {}: sha256 is not 64 hex digits", p.principal))?;
            if by_hash.insert(key, p.clone()).is_some() {
                return Err(format!("token of {}: listed twice", p.principal));
            }
        }
        Ok(Tokens { by_hash })
    }

    /// The principal of an `Authorization: Bearer …` value, if the token is known. The token
    /// is hashed first, so the lookup's timing depends on its hash, not on the secret.
    pub fn check(&self, authorization: Option<&str>) -> Option<&Principal> {
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash.get(&hash)
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_maps_to_its_principal_by_hash_only() {
        let text = format!(
            "[[token]]\nsha256 = \"{}\"\nprincipal = \"genesys-prod\"\ntenant = \"acme\"\nsource = \"genesys-eventbridge\"\n",
            token_hash("s3cret-token")
        );
        let t = Tokens::parse(&text).unwrap();
        let p = t.check(Some("Bearer s3cret-token")).unwrap();
        assert_eq!(p.principal, "genesys-prod");
        assert_eq!(p.tenant.as_deref(), Some("acme"));
        assert_eq!(p.source, Some(SourceKind::GenesysEventbridge));
        assert!(t.check(Some("Bearer other")).is_none());
        assert!(
            t.check(Some("s3cret-token")).is_none(),
            "not a bearer value"
        );
        assert!(t.check(None).is_none());
        assert!(Tokens::parse("[[token]]\nsha256 = \"xy\"\nprincipal = \"p\"\n").is_err());
    }

    #[test]
    fn signatures_are_checked_in_constant_time_within_a_window() {
        use hmac::{KeyInit, Mac};
        let sign = |secret: &str, t: i64, body: &[u8]| {
            let mut m = hmac::Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            m.update(format!("{t}.").as_bytes());
            m.update(body);
            format!("t={t},v1={}", hex::encode(m.finalize().into_bytes()))
        };
        let now = 1_800_000_000;
        let secret = "k-7f3a-secret";
        let good = sign(secret, now - 10, b"{}");
        assert!(check_signature(secret, Some(&good), b"{}", now).is_ok());
        for (header, body, at) in [
            (None, &b"{}"[..], now),
            (Some(good.clone()), &b"{ }"[..], now),
            (Some(sign("other", now, b"{}")), &b"{}"[..], now),
            (
                Some(good.clone()),
                &b"{}"[..],
                now + SIGNATURE_WINDOW_SECS + 11,
            ),
            (Some("v1=00".to_string()), &b"{}"[..], now),
        ] {
            let e = check_signature(secret, header.as_deref(), body, at).unwrap_err();
            let expected = sign(secret, now - 10, body);
            assert!(!e.contains(secret) && !e.contains(&expected[15..]), "{e}");
        }
    }
}
