//! Transit over HTTP: one `reqwest` client (rustls with ring; the system roots plus the
//! configured CA file), the token and namespace headers, a timeout per request, and bounded
//! retries with exponential backoff and jitter on 429, 5xx and connection errors.
//!
//! Requests run on a small runtime of the client's own: callers wait on them from any
//! executor (the batch's decode threads use `futures::executor::block_on`, with no Tokio
//! reactor), and the connection pool stays with the runtime that opened its connections.

use super::{KmsError, TransitConfig};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// Why a call failed, before it becomes a [`KmsError`] (which needs the key and path).
#[derive(Debug)]
pub(crate) enum Failure {
    /// 404: the path (a key, a mount) does not exist.
    NotFound,
    /// 403: a wrong or expired token, or a policy that does not allow the call.
    Forbidden,
    /// Still 429 after every retry.
    Throttled { attempts: u32 },
    /// Still no answer (connection refused, timeout, TLS) after every retry.
    Unreachable { detail: String, attempts: u32 },
    /// Still 5xx after every retry.
    Unavailable {
        status: u16,
        message: String,
        attempts: u32,
    },
    /// Any other status: the server's own error messages.
    Status { status: u16, message: String },
    /// 2xx with a body that is not JSON.
    BadAnswer,
    /// The AppRole login was refused (the server's messages).
    Login { status: u16, message: String },
}

pub(super) struct Client {
    inner: Arc<Inner>,
    rt: Rt,
}

/// The client's runtime, shut down without waiting when the client goes (a runtime dropped
/// the ordinary way inside an async context panics).
struct Rt(Option<tokio::runtime::Runtime>);

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

struct Inner {
    http: reqwest::Client,
    address: String,
    base: String,
    mount: String,
    namespace: Option<String>,
    /// The token: the configured one, or AppRole's once logged in.
    token: tokio::sync::OnceCell<super::Token>,
    approle: Option<super::AppRole>,
    retries: u32,
    backoff: Duration,
}

/// Whether `host` is this machine (plain http is allowed only there).
fn loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

impl Client {
    pub(super) fn new(cfg: &TransitConfig) -> Result<Self, KmsError> {
        let address = cfg.address.trim_end_matches('/').to_string();
        let mount = cfg.mount.trim_matches('/').to_string();
        let bad = |problem: String| KmsError::Backend {
            backend: format!("OpenBao/Vault Transit at {address}"),
            key: cfg.key.clone(),
            problem,
        };
        let url = url::Url::parse(&address)
            .map_err(|e| bad(format!("address `{address}` is not a URL ({e})")))?;
        match url.scheme() {
            "https" => {}
            "http" if loopback(&url) => {}
            "http" => {
                return Err(bad(format!(
                    "refusing to send a token over plain http to {address}; use https (with `ca_file` for a private CA)"
                )));
            }
            s => return Err(bad(format!("address scheme `{s}` is not http(s)"))),
        }
        if cfg.key.is_empty() || cfg.key.contains('/') {
            return Err(bad(format!("`{}` is not a Transit key name", cfg.key)));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &cfg.ca_file {
            #[allow(clippy::disallowed_methods)] // the caller's CA file, not the store
            let pem =
                std::fs::read(ca).map_err(|e| bad(format!("ca_file {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                bad(format!(
                    "ca_file {}: not PEM certificates ({e})",
                    ca.display()
                ))
            })?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .map_err(|e| bad(format!("cannot set up the HTTP client: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("holdfast-kms")
            .enable_all()
            .build()
            .map_err(|e| bad(format!("cannot start the HTTP runtime: {e}")))?;
        let inner = Inner {
            http,
            base: format!("{address}/v1/{mount}"),
            address,
            mount,
            namespace: cfg.namespace.clone().filter(|n| !n.is_empty()),
            token: match &cfg.approle {
                Some(_) => tokio::sync::OnceCell::new(),
                None => tokio::sync::OnceCell::new_with(Some(cfg.token.clone())),
            },
            approle: cfg.approle.clone(),
            retries: cfg.retries,
            backoff: cfg.backoff,
        };
        Ok(Client {
            inner: Arc::new(inner),
            rt: Rt(Some(rt)),
        })
    }

    /// One call (with its retries) on the client's runtime.
    async fn send(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<&[u8]>,
    ) -> Result<Value, Failure> {
        let inner = self.inner.clone();
        let body = body.map(|b| Zeroizing::new(b.to_vec()));
        let rt = self.rt.0.as_ref().expect("runtime until drop");
        let task = rt.spawn(async move {
            inner
                .send(method, &url, body.as_deref().map(|b| b.as_slice()))
                .await
        });
        task.await.unwrap_or_else(|e| {
            Err(Failure::Unreachable {
                detail: format!("the request task failed: {e}"),
                attempts: 1,
            })
        })
    }

    /// The backend as messages name it.
    pub(super) fn backend(&self) -> String {
        self.inner.backend()
    }

    pub(super) fn mount(&self) -> &str {
        &self.inner.mount
    }

    /// `GET <mount>/<path>`.
    pub(super) async fn get(&self, path: &str) -> Result<Value, Failure> {
        let url = format!("{}/{path}", self.inner.base);
        self.send(reqwest::Method::GET, url, None).await
    }

    /// `POST <mount>/<path>` with a JSON body.
    pub(super) async fn post(&self, path: &str, body: &[u8]) -> Result<Value, Failure> {
        let url = format!("{}/{path}", self.inner.base);
        self.send(reqwest::Method::POST, url, Some(body)).await
    }
}

impl Inner {
    fn backend(&self) -> String {
        match &self.namespace {
            Some(ns) => format!(
                "OpenBao/Vault Transit at {} (namespace {ns}, mount {})",
                self.address, self.mount
            ),
            None => format!(
                "OpenBao/Vault Transit at {} (mount {})",
                self.address, self.mount
            ),
        }
    }

    fn delay(&self, attempt: u32) -> Duration {
        let base = self.backoff.saturating_mul(1 << (attempt - 1).min(10));
        // up to a quarter more, so that many clients do not retry in step
        let jitter = base.mul_f64(rand::random::<f64>() / 4.0);
        base + jitter
    }

    /// The token to send: the configured one, or one AppRole's login gives (once).
    async fn token(&self) -> Result<&super::Token, Failure> {
        self.token
            .get_or_try_init(|| async {
                let Some(a) = &self.approle else {
                    return Err(Failure::Forbidden);
                };
                let url = format!("{}/v1/auth/{}/login", self.address, a.mount);
                let body = Zeroizing::new(
                    serde_json::to_vec(&serde_json::json!({
                        "role_id": a.role_id,
                        "secret_id": a.secret_id.expose(),
                    }))
                    .expect("serializes"),
                );
                let sent = self.send_with(reqwest::Method::POST, &url, Some(&body), None);
                let answer = match sent.await {
                    Ok(v) => v,
                    Err(Failure::Status { status, message }) => {
                        return Err(Failure::Login { status, message });
                    }
                    Err(Failure::Forbidden) => {
                        let message = "permission denied".to_string();
                        return Err(Failure::Login {
                            status: 403,
                            message,
                        });
                    }
                    Err(f) => return Err(f),
                };
                match answer["auth"]["client_token"].as_str() {
                    Some(t) if !t.is_empty() => Ok(super::Token::new(t.to_string())),
                    _ => Err(Failure::BadAnswer),
                }
            })
            .await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&[u8]>,
    ) -> Result<Value, Failure> {
        let token = self.token().await?.clone();
        self.send_with(method, url, body, Some(&token)).await
    }

    /// One call with its retries, with `token` (none: an unauthenticated call, the login).
    async fn send_with(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&[u8]>,
        token: Option<&super::Token>,
    ) -> Result<Value, Failure> {
        let mut last = Failure::BadAnswer;
        let attempts = self.retries + 1;
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(self.delay(attempt)).await;
            }
            let mut req = self
                .http
                .request(method.clone(), url)
                .header("X-Vault-Request", "true");
            if let Some(t) = token {
                req = req.header("X-Vault-Token", t.expose());
            }
            if let Some(ns) = &self.namespace {
                req = req.header("X-Vault-Namespace", ns);
            }
            if let Some(b) = body {
                req = req
                    .header("Content-Type", "application/json")
                    .body(b.to_vec());
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = Failure::Unreachable {
                        detail: chain(&e),
                        attempts: attempt + 1,
                    };
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    last = Failure::Unreachable {
                        detail: chain(&e),
                        attempts: attempt + 1,
                    };
                    continue;
                }
            };
            match status {
                200..=299 if bytes.is_empty() => return Ok(Value::Null),
                200..=299 => return serde_json::from_slice(&bytes).map_err(|_| Failure::BadAnswer),
                429 => {
                    last = Failure::Throttled {
                        attempts: attempt + 1,
                    }
                }
                500 | 502..=504 => {
                    last = Failure::Unavailable {
                        status,
                        message: messages(&bytes),
                        attempts: attempt + 1,
                    }
                }
                404 => return Err(Failure::NotFound),
                403 => return Err(Failure::Forbidden),
                _ => {
                    return Err(Failure::Status {
                        status,
                        message: messages(&bytes),
                    });
                }
            }
        }
        Err(last)
    }
}

impl Client {
    /// The error a failed call on `path` (under the mount) for `key` means. A 403 is told
    /// apart by asking the token to look itself up (any valid token may): refused too, the
    /// token is bad; allowed, the policy lacks the call.
    pub(super) async fn error(&self, f: Failure, key: &str, path: &str) -> KmsError {
        let backend = self.backend();
        let inner = &self.inner;
        let key = key.to_string();
        let path = format!("{}/{path}", inner.mount);
        match f {
            Failure::Forbidden => {
                let url = format!("{}/v1/auth/token/lookup-self", inner.address);
                match self.send(reqwest::Method::GET, url, None).await {
                    Ok(_) => KmsError::PermissionDenied {
                        backend,
                        key,
                        path,
                        hint: "the token is valid but its policy does not allow this call; grant it in the token's policy".into(),
                    },
                    Err(_) => KmsError::BadToken { backend, path },
                }
            }
            Failure::Throttled { attempts } => KmsError::Throttled {
                backend,
                key,
                attempts,
                hint: "the server answered 429 each time; wait, lower the request rate or raise the server's rate-limit quota, then rerun".into(),
            },
            Failure::Unreachable { detail, attempts } => KmsError::Unreachable {
                backend,
                detail,
                attempts,
                hint: "check the address ([kms] address, BAO_ADDR or VAULT_ADDR) and that the server is up".into(),
            },
            Failure::Unavailable {
                status,
                message,
                attempts,
            } => KmsError::Backend {
                backend,
                key,
                problem: format!(
                    "{path} answered {status} ({message}) {attempts} time(s); check the server's health (`bao status`)"
                ),
            },
            Failure::NotFound => KmsError::Backend {
                backend,
                key,
                problem: format!(
                    "{path} does not exist: is Transit enabled at mount `{}`?",
                    inner.mount
                ),
            },
            Failure::Status { status, message } => KmsError::Backend {
                backend,
                key,
                problem: format!("{path} answered {status}: {message}"),
            },
            Failure::Login { status, message } => KmsError::BadCredentials {
                backend,
                detail: format!("AppRole login refused ({status}: {message})"),
                hint: "check BAO_ROLE_ID and BAO_SECRET_ID (a secret id may be used up or expired) and BAO_APPROLE_MOUNT".into(),
            },
            Failure::BadAnswer => KmsError::Backend {
                backend,
                key,
                problem: format!("{path} answered with something that is not JSON"),
            },
        }
    }
}

/// The server's `errors` (each cut to 200 characters; they name paths and causes, never
/// request values).
fn messages(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let list: Vec<String> = v["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str())
                .map(|e| e.chars().take(200).collect())
                .collect()
        })
        .unwrap_or_default();
    if list.is_empty() {
        "no message".into()
    } else {
        list.join("; ")
    }
}

/// An HTTP error and its causes, on one line (the URL holds no secret: the token travels in a
/// header).
fn chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}
