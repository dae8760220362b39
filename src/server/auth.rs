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
}
