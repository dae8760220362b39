//! `holdfast serve`: the webhook receiver in front of the landing zone, with scheduled
//! batches, health and metrics.
//!
//! - `POST /v1/metadata/events`: one event, a JSON array, or NDJSON, from a platform whose
//!   bearer token ([`auth`]) decides its tenant; answered 202 only once its lines are in a
//!   durable landing segment ([`intake`]'s group commit). Past the backlog bound: 429.
//! - `GET /healthz` (the process answers), `GET /readyz` (the store answers and the backlog
//!   is under its bound), `GET /metrics` (Prometheus text, [`metrics`]).
//! - The legal-holds API ([`holds`]): `PATCH`/`GET /api/v2/retention/holds`, release and
//!   approve, as the token's principal with the store's roles.
//! - Batches run on a schedule under the batch lease ([`schedule`]).
//!
//! HTTP/1.1 over TLS 1.2/1.3 ([`tls`], from PEM files), or plain on a loopback address (or
//! behind a TLS proxy when the pipeline allows it). Logs are JSON lines on stderr and never
//! carry payload values.

pub mod auth;
pub mod holds;
pub mod intake;
pub mod metrics;
pub mod schedule;
pub mod tls;

use crate::config::ServeConfig;
use crate::job::{BatchOptions, Context};
use crate::sources::SourceKind;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the handlers share.
pub struct State {
    pub ctx: Arc<Context>,
    pub tokens: auth::Tokens,
    pub committer: intake::Committer,
    pub seen: Mutex<intake::Seen>,
    pub metrics: metrics::Metrics,
    pub cfg: ServeConfig,
    /// Landing bytes not yet batched: as listed after the last batch, plus what was
    /// committed since.
    pub backlog_bytes: AtomicU64,
    /// Arrival of the oldest landed segment not yet batched, likewise.
    pub oldest: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
}

/// Writes one JSON log line (an event name and its fields; never payload values).
pub fn log(state: &State, event: &str, fields: &serde_json::Value) {
    let at = crate::clock::fmt_ts(state.ctx.clock.now());
    eprintln!(
        "{}",
        serde_json::json!({"at": at, "event": event, "fields": fields})
    );
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// The shared state, with the committer started (its commits count into the metrics).
fn state_of(ctx: Arc<Context>, cfg: ServeConfig, tokens: auth::Tokens) -> Arc<State> {
    let group = intake::GroupCommit {
        window: Duration::from_millis(cfg.flush_ms),
        max_bytes: 8 << 20,
        in_flight: 1,
    };
    Arc::new_cyclic(|weak: &std::sync::Weak<State>| {
        let w = weak.clone();
        let committer = intake::Committer::start(ctx.clone(), group, move |c| {
            if let Some(s) = w.upgrade() {
                let labels = metrics::EventLabels {
                    tenant: c.tenant.unwrap_or("").to_string(),
                    source: c.source.to_string(),
                };
                s.metrics.accepted.get_or_create(&labels).inc_by(c.lines);
                s.backlog_bytes.fetch_add(c.bytes, Ordering::SeqCst);
                s.metrics.backlog_segments.inc();
                let mut oldest = s.oldest.lock().expect("oldest");
                oldest.get_or_insert(c.arrived_at);
            }
        });
        State {
            ctx,
            tokens,
            committer,
            seen: Mutex::new(intake::Seen::new(cfg.idempotency_keys)),
            metrics: metrics::Metrics::default(),
            cfg,
            backlog_bytes: AtomicU64::new(0),
            oldest: Mutex::new(None),
        }
    })
}

/// Binds `cfg.listen` and serves until SIGTERM or SIGINT (then it stops accepting and lets
/// the requests in the committer finish); batches run every
/// `cfg.batch_every_secs` with `batch`. `bound` learns the address (port 0 picks one) and
/// whether it speaks TLS.
pub async fn serve(
    ctx: Arc<Context>,
    cfg: ServeConfig,
    tokens: auth::Tokens,
    batch: BatchOptions,
    bound: impl FnOnce(std::net::SocketAddr, bool),
) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: cfg.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: cfg.listen.clone(),
        source,
    })?;
    let tls = tls::acceptor(&cfg).map_err(ServeError::Config)?;
    if tls.is_none() && !addr.ip().is_loopback() && !cfg.allow_plain_http {
        return Err(ServeError::Config(format!(
            "{addr} is not a loopback address: set tls_cert and tls_key under [serve], or put a TLS proxy in front and set allow_plain_http = true"
        )));
    }
    if tokens.is_empty() {
        return Err(ServeError::Config(
            "the tokens file lists no token: nobody could send events".into(),
        ));
    }
    let state = state_of(ctx, cfg.clone(), tokens);
    schedule::measure(&state).await;
    let (stop, finished) = schedule::start(state.clone(), batch);
    bound(addr, tls.is_some());
    log(
        &state,
        "listening",
        &serde_json::json!({"address": addr.to_string()}),
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| ServeError::Listen {
            addr: addr.to_string(),
            source,
        })?;
    let open = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections.max(1)));
    loop {
        // at the cap, new connections wait in the listen queue until one closes
        let accepted = tokio::select! {
            a = async {
                let permit = open.clone().acquire_owned().await.expect("never closed");
                (permit, listener.accept().await)
            } => a,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        let (permit, Ok((stream, _))) = accepted else {
            continue;
        };
        let (state, tls) = (state.clone(), tls.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => connection(state, stream).await,
                Some(acceptor) => {
                    let handshake = Duration::from_secs(HEADER_TIMEOUT_SECS);
                    if let Ok(Ok(s)) =
                        tokio::time::timeout(handshake, acceptor.accept(stream)).await
                    {
                        connection(state, s).await
                    }
                }
            }
        });
    }
    // stopped: no new connections; requests already handed to the committer get their answer
    // (a kill instead loses nothing acknowledged either: an answer waits for durability)
    drop(listener);
    let until = Instant::now() + Duration::from_secs(10);
    while state.committer.pending.load(Ordering::SeqCst) > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // a batch under way finishes (a kill would be safe too: the next batch redoes it)
    let _ = stop.send(true);
    let _ = finished.await;
    log(&state, "stopped", &serde_json::json!({}));
    Ok(())
}

/// Serves one connection (plain or TLS) until the client closes it.
async fn connection<S>(state: Arc<State>, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(HEADER_TIMEOUT_SECS))
        .serve_connection(io, service)
        .await;
}

/// Seconds a client has to send its headers.
const HEADER_TIMEOUT_SECS: u64 = 10;

type Answer = Response<Full<Bytes>>;

fn json(status: StatusCode, body: serde_json::Value) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("a header value"),
    );
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    json(status, serde_json::json!({"error": message.into()}))
}

async fn handle(state: &Arc<State>, req: Request<Incoming>) -> Answer {
    let t = Instant::now();
    let path = req.uri().path().to_string();
    let holds_rest = path
        .strip_prefix(holds::PREFIX)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'));
    let (route, answer) = match (req.method(), path.as_str()) {
        _ if holds_rest.is_some() => {
            let rest = holds_rest.unwrap_or_default();
            ("holds", holds::handle(state, req, rest).await)
        }
        (&Method::POST, "/v1/metadata/events") => ("events", events(state, req).await),
        (&Method::GET, "/healthz") => (
            "healthz",
            json(StatusCode::OK, serde_json::json!({"status": "up"})),
        ),
        (&Method::GET, "/readyz") => ("readyz", ready(state).await),
        (&Method::GET, "/metrics") => {
            state.metrics.set_kms_calls(state.ctx.kms.calls());
            let mut r = Response::new(Full::new(Bytes::from(state.metrics.encode())));
            r.headers_mut().insert(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
                    .parse()
                    .expect("a header value"),
            );
            ("metrics", r)
        }
        (_, "/v1/metadata/events" | "/healthz" | "/readyz" | "/metrics") => (
            "other",
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        ),
        _ => ("other", error(StatusCode::NOT_FOUND, "no such route")),
    };
    let labels = metrics::RouteLabels {
        route,
        status: answer.status().as_u16(),
    };
    state.metrics.requests.get_or_create(&labels).inc();
    state.metrics.latency.observe(t.elapsed().as_secs_f64());
    answer
}

async fn ready(state: &State) -> Answer {
    let store = state.ctx.store.list("_leases").await;
    let backlog = state.backlog_bytes.load(Ordering::SeqCst);
    let bound = state.cfg.max_backlog_mb << 20;
    match store {
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store does not answer: {e}"),
        ),
        Ok(_) if backlog >= bound => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the landing backlog ({backlog} bytes) is at its bound ({bound})"),
        ),
        Ok(_) => json(
            StatusCode::OK,
            serde_json::json!({"status": "ready", "backlog_bytes": backlog}),
        ),
    }
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The adapter `X-Source-Platform` names: the platforms' own names, or an `ingest --source`
/// name.
fn platform(name: &str) -> Option<SourceKind> {
    match name.to_ascii_uppercase().as_str() {
        "GENESYS_CX" | "GENESYS" => Some(SourceKind::GenesysEventbridge),
        "NICE_CXONE" | "NICE" => Some(SourceKind::NiceContacts),
        "AMAZON_CONNECT" | "CONNECT" => Some(SourceKind::ConnectCtr),
        _ => SourceKind::from_name(&name.to_ascii_lowercase()),
    }
}

fn refuse(state: &State, status: StatusCode, why: &'static str, message: String) -> Answer {
    state.metrics.refuse(why);
    error(status, message)
}

/// What an admitted request sends: its tenant (the token's), payload shape, framing, and
/// idempotency key.
struct Admitted {
    tenant: String,
    source: SourceKind,
    framing: intake::Framing,
    key: Option<String>,
    /// The shared secret its bodies are signed with, and the signature header sent.
    signed: Option<(String, Option<String>)>,
}

/// Checks a request before its body is read: who sends it, for which tenant, in which
/// framing and shape, and whether the backlog has room.
fn admit(state: &State, req: &Request<Incoming>) -> Result<Admitted, Box<Answer>> {
    let Some(principal) = state.tokens.check(header(req, "authorization")) else {
        let mut r = refuse(
            state,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a bearer token is required".into(),
        );
        r.headers_mut().insert(
            "www-authenticate",
            "Bearer".parse().expect("a header value"),
        );
        return Err(Box::new(r));
    };
    let forbidden = |message| {
        Err(Box::new(refuse(
            state,
            StatusCode::FORBIDDEN,
            "tenant",
            message,
        )))
    };
    let Some(tenant) = principal.tenant.clone() else {
        return forbidden(format!(
            "{} has no tenant to send events for",
            principal.principal
        ));
    };
    if let Some(asked) = header(req, "x-tenant-id")
        && asked != tenant
    {
        return forbidden(format!(
            "this token sends events for tenant {tenant}, not {asked}"
        ));
    }
    let content_type =
        header(req, "content-type").map(|c| c.split(';').next().unwrap_or("").trim());
    let framing = match content_type {
        Some("application/json") => intake::Framing::Json,
        Some("application/x-ndjson") => intake::Framing::Ndjson,
        other => {
            return Err(Box::new(refuse(
                state,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content_type",
                format!(
                    "content type {} is not application/json or application/x-ndjson",
                    other.unwrap_or("(none)")
                ),
            )));
        }
    };
    let source = match header(req, "x-source-platform") {
        None => principal.source.unwrap_or(SourceKind::Auto),
        Some(p) => platform(p).ok_or_else(|| {
            let message = format!("X-Source-Platform {p} is not a platform holdfast knows");
            Box::new(refuse(state, StatusCode::BAD_REQUEST, "source", message))
        })?,
    };
    let backlog =
        state.backlog_bytes.load(Ordering::SeqCst) + state.committer.pending.load(Ordering::SeqCst);
    if backlog >= state.cfg.max_backlog_mb << 20 {
        let message = "the landing backlog is full; retry later".into();
        let mut r = refuse(state, StatusCode::TOO_MANY_REQUESTS, "backlog", message);
        r.headers_mut()
            .insert("retry-after", "5".parse().expect("a header value"));
        return Err(Box::new(r));
    }
    let key = header(req, "x-event-idempotency-key").map(str::to_string);
    let signature = header(req, "x-holdfast-signature").map(str::to_string);
    Ok(Admitted {
        tenant,
        source,
        framing,
        key,
        signed: principal.hmac_secret.clone().map(|s| (s, signature)),
    })
}

/// The request's body, within the size and time limits.
async fn body(state: &State, req: Request<Incoming>) -> Result<Bytes, Box<Answer>> {
    let limit = usize::try_from(state.cfg.max_body_mb << 20).unwrap_or(usize::MAX);
    let read = tokio::time::timeout(
        Duration::from_secs(state.cfg.request_timeout_secs),
        Limited::new(req.into_body(), limit).collect(),
    )
    .await;
    match read {
        Err(_) => Err(Box::new(refuse(
            state,
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the body took too long".into(),
        ))),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Box::new(refuse(
            state,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is over {} MiB", state.cfg.max_body_mb),
        ))),
        Ok(Err(e)) => Err(Box::new(refuse(
            state,
            StatusCode::BAD_REQUEST,
            "body",
            format!("reading the body: {e}"),
        ))),
        Ok(Ok(b)) => Ok(b.to_bytes()),
    }
}

async fn events(state: &State, req: Request<Incoming>) -> Answer {
    let a = match admit(state, &req) {
        Ok(a) => a,
        Err(answer) => return *answer,
    };
    let body = match body(state, req).await {
        Ok(b) => b,
        Err(answer) => return *answer,
    };
    if let Some((secret, signature)) = &a.signed {
        let now = state.ctx.clock.now().timestamp();
        if let Err(e) = auth::check_signature(secret, signature.as_deref(), &body, now) {
            return refuse(state, StatusCode::UNAUTHORIZED, "signature", e);
        }
    }
    if let Some(k) = &a.key
        && state.seen.lock().expect("seen").contains(k)
    {
        let re = serde_json::json!({"accepted": 0, "duplicate": true});
        return json(StatusCode::ACCEPTED, re);
    }
    let (lines, n) = match intake::lines(a.framing, &body) {
        Ok(l) => l,
        Err(e) => return refuse(state, StatusCode::BAD_REQUEST, "not_json", e),
    };
    if n > state.cfg.max_events_per_request {
        let limit = state.cfg.max_events_per_request;
        let message = format!("{n} events; the limit is {limit} per request");
        return refuse(
            state,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_events",
            message,
        );
    }
    if let Some(other) = intake::other_tenant(a.source, &lines, &a.tenant) {
        let message = format!(
            "an event names tenant {other}; this token sends events for {}",
            a.tenant
        );
        return refuse(state, StatusCode::FORBIDDEN, "tenant", message);
    }
    if n == 0 {
        return json(StatusCode::ACCEPTED, serde_json::json!({"accepted": 0}));
    }
    match state
        .committer
        .submit(a.source, Some(a.tenant), lines)
        .await
    {
        Ok(segment) => {
            if let Some(k) = a.key {
                state.seen.lock().expect("seen").insert(k);
            }
            let done = serde_json::json!({"accepted": n, "segment": segment});
            json(StatusCode::ACCEPTED, done)
        }
        Err(e) => {
            log(state, "landing_failed", &serde_json::json!({"error": e}));
            let message = "the events could not be made durable; retry".into();
            refuse(state, StatusCode::SERVICE_UNAVAILABLE, "landing", message)
        }
    }
}
