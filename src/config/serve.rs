//! `[serve]`: how `holdfast serve` listens, whom it accepts, and when it batches.

use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address to listen on. Without `tls_cert`/`tls_key`, plain HTTP is refused on anything
    /// but a loopback address unless `allow_plain_http` (a proxy in front terminates TLS).
    #[serde(default = "listen")]
    pub listen: String,
    /// Allow plain HTTP on a non-loopback address (behind a proxy that terminates TLS).
    #[serde(default)]
    pub allow_plain_http: bool,
    /// PEM certificate chain: with `tls_key`, the server speaks TLS 1.2/1.3 only.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (mode 0600, outside the store).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// The tokens file (TOML, mode 0600, outside the store): `[[token]]` entries with the
    /// SHA-256 of each bearer token, its principal, tenant and source shape.
    pub tokens: PathBuf,
    /// Seconds between scheduled batches.
    #[serde(default = "batch_every")]
    pub batch_every_secs: u64,
    /// Landing backlog (MiB) that starts a batch before its time.
    #[serde(default = "batch_backlog")]
    pub batch_backlog_mb: u64,
    /// Largest request body (MiB); larger: 413.
    #[serde(default = "max_body")]
    pub max_body_mb: u64,
    /// Most events in one request; more: 413.
    #[serde(default = "max_events")]
    pub max_events_per_request: u64,
    /// Landing bytes not yet batched (MiB, with what is being written) past which requests
    /// get 429 and a `Retry-After`.
    #[serde(default = "max_backlog")]
    pub max_backlog_mb: u64,
    /// Milliseconds the group commit waits for more requests before writing (0, the default:
    /// it writes what has queued at once, one segment per source and tenant with one
    /// directory sync for all, and what arrives meanwhile goes into the next group).
    #[serde(default = "flush_ms")]
    pub flush_ms: u64,
    /// Idempotency keys remembered (a re-delivery of one is acknowledged and dropped).
    #[serde(default = "idempotency_keys")]
    pub idempotency_keys: usize,
    /// Seconds a client has to send its request (headers and body).
    #[serde(default = "request_timeout")]
    pub request_timeout_secs: u64,
    /// Connections served at once; more wait in the listen queue until one closes.
    #[serde(default = "max_connections")]
    pub max_connections: usize,
}

fn listen() -> String {
    "127.0.0.1:8080".into()
}
fn batch_every() -> u64 {
    10
}
fn batch_backlog() -> u64 {
    64
}
fn max_body() -> u64 {
    10
}
fn max_events() -> u64 {
    10_000
}
fn max_backlog() -> u64 {
    1024
}
fn flush_ms() -> u64 {
    0
}
fn idempotency_keys() -> usize {
    100_000
}
fn request_timeout() -> u64 {
    30
}
fn max_connections() -> usize {
    1024
}
