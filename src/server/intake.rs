//! `POST /v1/metadata/events`: a request body becomes landing lines, and the group commit
//! makes them durable before the 202.
//!
//! Requests do not each write a segment. They hand their lines to the committer, which
//! gathers what arrives within a few milliseconds (or up to a size), writes one segment per
//! source and tenant (one create-only put: fsync'd on disk, a completed PUT on S3), and only
//! then answers every request it holds. A request is acknowledged when its bytes are
//! durable; a kill before that loses nothing the platform was told was kept.

use crate::job::Context;
use crate::landing::{SegmentBuilder, segment_id};
use crate::sources::SourceKind;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How a body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `application/json`: one event, or an array of events.
    Json,
    /// `application/x-ndjson`: one event per line.
    Ndjson,
}

/// The landing lines of a body, each ending in `\n`, and how many. NDJSON lines are kept as
/// sent (blank ones dropped). A JSON body's events keep their own bytes, except that line
/// breaks between tokens become spaces (a JSON string cannot hold a raw line break), so each
/// event is one line. A line that is not a valid event is kept too: the batch quarantines it
/// with its reason. Only a JSON body that is not JSON is refused.
pub fn lines(framing: Framing, body: &[u8]) -> Result<(Vec<u8>, u64), String> {
    let mut out = Vec::with_capacity(body.len() + 2);
    let mut n = 0u64;
    let mut push = |line: &[u8], out: &mut Vec<u8>| {
        let start = out.len();
        out.extend_from_slice(line);
        for b in &mut out[start..] {
            if *b == b'\n' || *b == b'\r' {
                *b = b' ';
            }
        }
        out.push(b'\n');
        n += 1;
    };
    match framing {
        Framing::Ndjson => {
            for line in body.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if !line.iter().all(u8::is_ascii_whitespace) {
                    push(line, &mut out);
                }
            }
        }
        Framing::Json => {
            let start = body.iter().position(|b| !b.is_ascii_whitespace());
            if start.is_some_and(|i| body[i] == b'[') {
                let events: Vec<&RawValue> = serde_json::from_slice(body)
                    .map_err(|e| format!("the body is not a JSON array of events: {e}"))?;
                for e in events {
                    push(e.get().as_bytes(), &mut out);
                }
            } else {
                let event: &RawValue = serde_json::from_slice(body)
                    .map_err(|e| format!("the body is not JSON: {e}"))?;
                push(event.get().as_bytes(), &mut out);
            }
        }
    }
    Ok((out, n))
}

/// A tenant other than `tenant` that an event of `lines` names, if any: a platform's token
/// decides its tenant, so a request carrying another's events is refused whole. Lines that
/// do not decode are left to the batch, which quarantines them with their reason.
pub fn other_tenant(source: SourceKind, lines: &[u8], tenant: &str) -> Option<String> {
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if let Some(f) = source.decode_fast(line) {
            if f.tenant_id != tenant {
                return Some(f.tenant_id);
            }
            continue;
        }
        let Ok(decoded) = source.decode(line, Some(tenant)) else {
            continue;
        };
        for d in decoded {
            if let Some(named) = d.event.get("tenantId").and_then(|v| v.as_str())
                && named != tenant
            {
                return Some(named.to_string());
            }
        }
    }
    None
}

/// Idempotency keys seen recently (bounded: the oldest is forgotten first). Only keys of
/// requests already durable are recorded, so a re-delivery it drops was kept the first time.
#[derive(Debug)]
pub struct Seen {
    keys: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Seen {
    pub fn new(capacity: usize) -> Self {
        Seen {
            keys: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    pub fn insert(&mut self, key: String) {
        if self.capacity == 0 || !self.keys.insert(key.clone()) {
            return;
        }
        self.order.push_back(key);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
    }
}

/// A segment the committer made durable.
#[derive(Debug, Clone, Copy)]
pub struct Committed<'a> {
    pub source: &'a str,
    pub tenant: Option<&'a str>,
    pub lines: u64,
    pub bytes: u64,
    pub arrived_at: chrono::DateTime<chrono::Utc>,
}

/// Lines of one request, for the committer.
struct Submission {
    source: SourceKind,
    tenant: Option<String>,
    lines: Vec<u8>,
    reply: oneshot::Sender<Result<String, String>>,
}

/// The handle requests submit through.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Submission>,
    /// Bytes handed over and not yet durable.
    pub pending: Arc<AtomicU64>,
}

/// When the committer writes.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommit {
    /// How long it gathers after the first request before writing (0: it takes what has
    /// queued and writes at once; requests arriving meanwhile form the next group).
    pub window: Duration,
    /// Bytes that end a gathering early.
    pub max_bytes: usize,
    /// Segment writes in flight at once (their fsyncs overlap).
    pub in_flight: usize,
}

impl Committer {
    /// Starts the committer task on the current runtime.
    pub fn start(
        ctx: Arc<Context>,
        group: GroupCommit,
        on_commit: impl Fn(Committed<'_>) + Send + Sync + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run(ctx, rx, group, on_commit));
        Committer {
            tx,
            pending: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Hands `lines` over and waits until they are durable: the segment's id, or why not.
    pub async fn submit(
        &self,
        source: SourceKind,
        tenant: Option<String>,
        lines: Vec<u8>,
    ) -> Result<String, String> {
        let size = lines.len() as u64;
        self.pending.fetch_add(size, Ordering::SeqCst);
        let (reply, answer) = oneshot::channel();
        let sent = self
            .tx
            .send(Submission {
                source,
                tenant,
                lines,
                reply,
            })
            .await;
        let r = match sent {
            Ok(()) => answer
                .await
                .unwrap_or_else(|_| Err("the committer stopped".into())),
            Err(_) => Err("the committer stopped".into()),
        };
        self.pending.fetch_sub(size, Ordering::SeqCst);
        r
    }
}

type Replies = Vec<oneshot::Sender<Result<String, String>>>;

/// How long one DEK serves a tenant's segments.
const KEY_LIFETIME: Duration = Duration::from_secs(60);

/// The DEK each tenant's segments share for a minute, with its wrapping: one call to the key
/// service per tenant and minute, not one per segment. A tenant the store binds to a key of
/// its own gets its DEK wrapped there, as `ingest` does: under that key, or not at all.
#[derive(Default)]
struct Keys {
    by_tenant: std::collections::HashMap<Option<String>, (SharedKey, std::time::Instant)>,
}

type SharedKey = Arc<(crate::crypto::DataKey, crate::crypto::kms::WrappedKey)>;

impl Keys {
    async fn for_tenant(
        &mut self,
        ctx: &Context,
        tenant: Option<&str>,
    ) -> Result<SharedKey, String> {
        let t = tenant.map(str::to_string);
        if let Some((k, made)) = self.by_tenant.get(&t)
            && made.elapsed() < KEY_LIFETIME
        {
            return Ok(k.clone());
        }
        let dek = crate::crypto::DataKey::generate();
        let own = tenant.and_then(|t| ctx.kms.tenant(t));
        let wrapped = match (&own, tenant) {
            (Some(k), Some(t)) => {
                k.wrap(&dek)
                    .await
                    .map_err(|e| crate::crypto::kms::KmsError::Tenant {
                        tenant: t.to_string(),
                        source: Box::new(e),
                    })
            }
            _ => ctx.kms.wrap(&dek).await,
        }
        .map_err(|e| e.to_string())?;
        let k = Arc::new((dek, wrapped));
        self.by_tenant
            .insert(t, (k.clone(), std::time::Instant::now()));
        Ok(k)
    }
}

/// `first` and what else is queued (waiting up to the window, if any), up to the size.
async fn gather(
    rx: &mut mpsc::Receiver<Submission>,
    first: Submission,
    group: GroupCommit,
) -> Vec<Submission> {
    let mut gathered = vec![first];
    let mut bytes = gathered[0].lines.len();
    let deadline = tokio::time::Instant::now() + group.window;
    while bytes < group.max_bytes {
        let next = match rx.try_recv() {
            Ok(s) => Some(s),
            Err(_) if group.window.is_zero() => None,
            Err(_) => tokio::time::timeout_at(deadline, rx.recv())
                .await
                .ok()
                .flatten(),
        };
        let Some(s) = next else { break };
        bytes += s.lines.len();
        gathered.push(s);
    }
    gathered
}

async fn run(
    ctx: Arc<Context>,
    mut rx: mpsc::Receiver<Submission>,
    group: GroupCommit,
    on_commit: impl Fn(Committed<'_>) + Send + Sync + 'static,
) {
    let random = rand::random::<u32>();
    let mut seq = 0u32;
    let on_commit = Arc::new(on_commit);
    let mut keys = Keys::default();
    let slots = Arc::new(tokio::sync::Semaphore::new(group.in_flight.max(1)));
    loop {
        // a free slot first: while every slot writes, requests queue up for the next group
        let slot = slots.clone().acquire_owned().await.expect("never closed");
        let Some(first) = rx.recv().await else {
            break;
        };
        let gathered = gather(&mut rx, first, group).await;
        let mut groups: BTreeMap<(&'static str, Option<String>), (SegmentBuilder, Replies)> =
            BTreeMap::new();
        for s in gathered {
            let g = groups.entry((s.source.name(), s.tenant)).or_default();
            g.0.push_lines(&s.lines);
            g.1.push(s.reply);
        }
        let mut segments = Vec::with_capacity(groups.len());
        for ((source, tenant), (builder, replies)) in groups {
            seq = seq.wrapping_add(1);
            let now = ctx.clock.now();
            match keys.for_tenant(&ctx, tenant.as_deref()).await {
                Ok(key) => segments.push(Pending {
                    segment: Meta {
                        source,
                        tenant,
                        id: segment_id(now, seq, random),
                        arrived_at: now,
                        replies,
                    },
                    key,
                    builder,
                }),
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(format!("no key for a landing segment: {e}")));
                    }
                }
            }
        }
        let (ctx, on_commit) = (ctx.clone(), on_commit.clone());
        tokio::spawn(async move {
            write_group(&ctx, segments, &*on_commit).await;
            drop(slot);
        });
    }
}

/// A segment of a group, ready to write.
struct Pending {
    segment: Meta,
    key: SharedKey,
    builder: SegmentBuilder,
}

/// A segment of a group: what names it, and whom to answer.
struct Meta {
    source: &'static str,
    tenant: Option<String>,
    id: String,
    arrived_at: chrono::DateTime<chrono::Utc>,
    replies: Replies,
}

/// A landing object of a group being assembled: its segments' bytes back to back, named by
/// the first that holds lines, and whom each segment answers.
#[derive(Default)]
struct Object {
    bytes: Vec<u8>,
    /// Each segment with its lines and its sealed size (0: it held no line, nothing written).
    parts: Vec<(Meta, u64, u64)>,
}

impl Object {
    fn add(&mut self, p: Pending) {
        let (m, lines) = (p.segment, p.builder.lines());
        let at = crate::landing::Labels {
            source: m.source,
            tenant: m.tenant.as_deref(),
            id: &m.id,
            arrived_at: m.arrived_at,
        };
        let sealed = p
            .builder
            .seal(&p.key.0, p.key.1.clone(), at, 1)
            .unwrap_or_default();
        let n = sealed.len() as u64;
        if self.bytes.is_empty() {
            self.bytes = sealed;
        } else {
            self.bytes.extend_from_slice(&sealed);
        }
        self.parts.push((m, lines, n));
    }

    /// Named by its first segment that holds lines; none when no segment does.
    fn path(&self) -> Option<object_store::path::Path> {
        let mut written = self.parts.iter().filter(|(_, _, n)| *n > 0);
        let first = &written.next()?.0.id;
        Some(match written.next() {
            Some(_) => crate::lake::layout::landing_segments(first),
            None => crate::lake::layout::landing_segment(first),
        })
    }
}

/// Writes a group as landing objects: the segments of tenants under the store's key back to
/// back in one (one file and one fsync however many tenants the group holds), and a segment
/// of a tenant with a key of its own alone (a batch that cannot open that key leaves only it
/// waiting in landing). Then one sync of the landing directory (its own, shared with no
/// batch's barrier), then every request of the group is answered.
async fn write_group(
    ctx: &Context,
    segments: Vec<Pending>,
    on_commit: &(dyn Fn(Committed<'_>) + Send + Sync),
) {
    let store = ctx.store.dir_synced_by_caller();
    let (mut objects, mut shared) = (Vec::new(), Object::default());
    for p in segments {
        let own = p.segment.tenant.as_deref().and_then(|t| ctx.kms.tenant(t));
        match own {
            Some(_) => {
                let mut alone = Object::default();
                alone.add(p);
                objects.push(alone);
            }
            None => shared.add(p),
        }
    }
    objects.push(shared);
    let written = futures::future::join_all(objects.iter_mut().map(|o| {
        let (store, bytes) = (&store, std::mem::take(&mut o.bytes));
        let path = o.path();
        async move {
            let Some(path) = path else { return Ok(None) };
            match crate::landing::put_object(store, &path, bytes).await {
                Ok(_) => Ok(Some(path)),
                Err(e) => Err(format!("landing object {path} was not written: {e}")),
            }
        }
    }))
    .await;
    // the objects' names are durable before any of their lines is acknowledged
    let synced = match written
        .iter()
        .find_map(|w| w.as_ref().ok().cloned().flatten())
    {
        Some(path) => store
            .sync_dir_of(&path)
            .await
            .map_err(|e| format!("landing object {path} was not made durable: {e}")),
        None => Ok(()),
    };
    for (o, w) in objects.into_iter().zip(written) {
        let answer = w.and_then(|_| synced.clone());
        for (m, lines, bytes) in o.parts {
            if answer.is_ok() {
                on_commit(Committed {
                    source: m.source,
                    tenant: m.tenant.as_deref(),
                    lines,
                    bytes,
                    arrived_at: m.arrived_at,
                });
            }
            let reply = answer.clone().map(|()| m.id.clone());
            for r in m.replies {
                let _ = r.send(reply.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_become_one_line_per_event() {
        let (l, n) = lines(Framing::Ndjson, b"{\"a\":1}\n\n{\"b\":2}\r\nnot json\n").unwrap();
        assert_eq!(n, 3);
        assert_eq!(l, b"{\"a\":1}\n{\"b\":2}\nnot json\n");
        let (l, n) = lines(Framing::Json, b" [ {\"a\":\n 1}, {\"b\":\"x\"} ]").unwrap();
        assert_eq!(n, 2);
        assert_eq!(l, b"{\"a\":  1}\n{\"b\":\"x\"}\n");
        let (l, n) = lines(Framing::Json, b"{\n  \"a\": 1\n}\n").unwrap();
        assert_eq!((l.as_slice(), n), (&b"{   \"a\": 1 }\n"[..], 1));
        assert!(lines(Framing::Json, b"{not json").is_err());
        assert!(lines(Framing::Json, b"[1, 2").is_err());
    }

    /// A tenant bound to a key of its own has its segments' DEK wrapped by that key; the
    /// others by the store's.
    #[test]
    fn a_tenant_with_its_own_key_lands_under_it() {
        use crate::crypto::kms::{Kms, LocalKeyring, Tenanted};
        let dir = tempfile::tempdir().unwrap();
        let ring = |name: &str| -> Arc<dyn Kms> {
            Arc::new(LocalKeyring::create(&dir.path().join(name), "2026-01-01T00:00:00Z").unwrap())
        };
        let (platform, acme) = (ring("p.json"), ring("a.json"));
        let tenants = std::collections::BTreeMap::from([("acme".to_string(), acme.clone())]);
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let ctx = Arc::new(Context {
            store: crate::storage::Store::memory_for_tests(),
            kms: Tenanted::wrap(platform.clone(), Vec::new(), tenants),
            clock: Arc::new(crate::clock::FakeClock::new(at.to_utc())),
            failpoints: crate::hooks::Failpoints::none(),
        });
        crate::test_support::block(async {
            let group = GroupCommit {
                window: Duration::ZERO,
                max_bytes: 1 << 20,
                in_flight: 1,
            };
            let c = Committer::start(ctx.clone(), group, |_| {});
            let mut keks = BTreeMap::new();
            for t in ["acme", "other"] {
                let line = format!("{{\"tenantId\":\"{t}\"}}\n").into_bytes();
                let id = c.submit(SourceKind::Canonical, Some(t.into()), line).await;
                let path = crate::lake::layout::landing_segment(&id.unwrap());
                let bytes = ctx.store.get(&path).await.unwrap();
                let seg = crate::landing::Segment::parse(path.as_ref(), bytes).unwrap();
                keks.insert(t, seg.header.wrapped_dek.kek_id);
            }
            assert_eq!(keks["acme"], acme.kek_id());
            assert_eq!(keks["other"], platform.kek_id());
        });
    }

    /// A group of several tenants is one landing object: their segments back to back, each
    /// with its own tenant, key and id, which the batch's parser reads back one by one. A
    /// tenant with a key of its own lands alone (only it waits when that key cannot be used).
    #[test]
    fn a_group_of_tenants_lands_as_one_object() {
        use crate::crypto::kms::{Kms, LocalKeyring, Tenanted};
        use crate::lake::layout;
        let dir = tempfile::tempdir().unwrap();
        let ring = |name: &str| -> Arc<dyn Kms> {
            Arc::new(LocalKeyring::create(&dir.path().join(name), "2026-01-01T00:00:00Z").unwrap())
        };
        let tenants = BTreeMap::from([("byok".to_string(), ring("b.json"))]);
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let ctx = Arc::new(Context {
            store: crate::storage::Store::memory_for_tests(),
            kms: Tenanted::wrap(ring("p.json"), Vec::new(), tenants),
            clock: Arc::new(crate::clock::FakeClock::new(at.to_utc())),
            failpoints: crate::hooks::Failpoints::none(),
        });
        crate::test_support::block(async {
            // a window long enough for the requests to join one group
            let group = GroupCommit {
                window: Duration::from_millis(300),
                max_bytes: 1 << 20,
                in_flight: 1,
            };
            let c = Committer::start(ctx.clone(), group, |_| {});
            let line = |t: &str| format!("{{\"tenantId\":\"{t}\"}}\n").into_bytes();
            let submit = |t: &'static str| c.submit(SourceKind::Canonical, Some(t.into()), line(t));
            let (a, b, own) = futures::join!(submit("acme"), submit("other"), submit("byok"));
            let (a, b, own) = (a.unwrap(), b.unwrap(), own.unwrap());
            let listed = ctx.store.list(layout::LANDING).await.unwrap();
            let mut paths: Vec<_> = listed.iter().map(|m| m.location.clone()).collect();
            paths.sort_by_key(layout::holds_several);
            assert_eq!(paths.len(), 2, "{paths:?}");
            assert_eq!(paths[0], layout::landing_segment(&own), "byok lands alone");
            let path = &paths[1];
            assert_eq!(*path, layout::landing_segments(&a));
            let bytes = ctx.store.get(path).await.unwrap();
            let segs = crate::landing::Segment::parse_object(path, bytes).unwrap();
            let mut got = Vec::new();
            for s in &segs {
                let cipher = s.unwrap_key(ctx.kms.as_ref()).await.unwrap();
                let tenant = s.header.tenant.clone().unwrap();
                assert_eq!(s.open_block(&cipher, 0).unwrap(), line(&tenant));
                got.push((s.header.segment_id.clone(), tenant));
            }
            assert_eq!(got, vec![(a, "acme".into()), (b, "other".into())]);
            let raw = crate::landing::raw_size(&ctx.store, path).await.unwrap();
            assert_eq!(raw, (line("acme").len() + line("other").len()) as u64);
        });
    }

    #[test]
    fn seen_keys_are_bounded() {
        let mut s = Seen::new(2);
        for k in ["a", "b", "c"] {
            s.insert(k.into());
        }
        assert!(!s.contains("a") && s.contains("b") && s.contains("c"));
    }
}
