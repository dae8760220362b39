//! TLS for `holdfast serve`: rustls (TLS 1.2 and 1.3, its safe defaults, ring) from PEM files
//! the operator keeps outside the store; a key others may read is refused.

use crate::config::ServeConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// The acceptor `cfg` asks for: `None` for plain HTTP (no `tls_cert`/`tls_key`).
pub fn acceptor(cfg: &ServeConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    let (cert, key) = match (&cfg.tls_cert, &cfg.tls_key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => return Err("[serve] needs both tls_cert and tls_key, or neither".into()),
    };
    private(key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect())
        .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("tls_cert {}: no certificate", cert.display()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls_key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| format!("TLS: {e}"))?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// Refuses a key file group or others may read.
fn private(key: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    // the operator's own key file, like the keyring: read here, never through a store
    #[allow(clippy::disallowed_methods)]
    let meta = std::fs::metadata(key).map_err(|e| format!("tls_key {}: {e}", key.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "tls_key {} has permissions {mode:o}; it must be 0600 (run: chmod 600 {})",
            key.display(),
            key.display()
        ));
    }
    Ok(())
}
