//! Leases: one batch or sweep at a time per store (`batch`), and hold placement kept apart
//! from a sweep's rewrites (`holds`: a hold placed while a sweep computes which records
//! survive could otherwise miss records the sweep is dropping).
//!
//! A lease is a series of create-only objects `_leases/<name>/v<20 digits>.json`; the latest
//! version is the state, and its number is the holder's fencing token:
//! - **expiry:** each version says until when it holds ([`EXPIRY`] after it was written);
//! - **renewal:** the holder writes the next version every `EXPIRY / 3` from a background
//!   task, and stops committing if it could not renew for `EXPIRY * 3/4`;
//! - **takeover:** a version that has expired (or was released, or whose holder ran on this
//!   host and is dead) is taken by creating the next version; of two takers one wins the
//!   create-only put, the other finds the lease held;
//! - **fencing:** before each commit step the holder checks ([`Lease::check`], [`Fence`])
//!   that its version is still the latest; one that was taken over stops.
//!
//! What it does not guarantee: expiry compares the clocks of different hosts, so their skew
//! must stay well under [`EXPIRY`]; a holder paused between its check and its write for longer
//! than the time left on its lease can still write once (S3 conditional writes would close that
//! window); removing a lease by hand defeats it.

use super::JobError;
use crate::clock::Clock;
use crate::lake::layout;
use crate::lake::storage::{Put, Store};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a lease version holds unless renewed.
pub const EXPIRY: Duration = Duration::from_secs(60);
/// The holder stops committing when less than this is left (renewals failed meanwhile).
const MARGIN: Duration = Duration::from_secs(15);
const FORMAT: &str = "holdfast.lease";

/// One lease version as stored (frozen format 1).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseV1 {
    format: String,
    version: u32,
    token: u64,
    holder: String,
    host: String,
    pid: u32,
    acquired_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    #[serde(default)]
    released: bool,
}

/// The holder of a lease lost it: taken over after it expired, or not renewed in time.
#[derive(Debug, thiserror::Error)]
#[error("the {lease} lease was lost ({reason}); this run commits nothing more, run it again")]
pub struct LeaseLost {
    pub lease: String,
    pub reason: String,
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn chrono_expiry() -> chrono::Duration {
    chrono::Duration::from_std(EXPIRY).expect("small duration")
}

/// The latest version of a lease: its token and, if readable, its contents.
struct Latest {
    token: u64,
    record: Option<LeaseV1>,
    written: DateTime<Utc>,
}

async fn max_token(store: &Store, name: &str) -> Result<Option<u64>, crate::lake::LakeError> {
    Ok(store
        .list(layout::lease_dir(name).as_ref())
        .await?
        .iter()
        .filter_map(|m| layout::parse_lease_version(&m.location))
        .filter(|(n, _)| n == name)
        .map(|(_, t)| t)
        .max())
}

async fn latest(store: &Store, name: &str) -> Result<Option<Latest>, crate::lake::LakeError> {
    let mut versions: Vec<_> = store
        .list(layout::lease_dir(name).as_ref())
        .await?
        .into_iter()
        .filter_map(|m| {
            let (n, t) = layout::parse_lease_version(&m.location)?;
            (n == name).then_some((t, m.last_modified))
        })
        .collect();
    versions.sort_unstable();
    let Some((token, written)) = versions.pop() else {
        return Ok(None);
    };
    let record = match store.get_opt(&layout::lease_version(name, token)).await? {
        Some(b) => serde_json::from_slice::<LeaseV1>(&b)
            .ok()
            .filter(|r| r.format == FORMAT && r.token == token),
        None => None,
    };
    Ok(Some(Latest {
        token,
        record,
        written,
    }))
}

/// What the latest version allows.
enum Standing {
    Free,
    TakeOver,
    Held(String),
}

impl Latest {
    fn standing(&self, now: DateTime<Utc>, host: &str) -> Standing {
        match &self.record {
            Some(r) if r.released => Standing::Free,
            Some(r) if r.expires_at <= now => Standing::TakeOver,
            Some(r) if r.host == host && !alive(r.pid) => Standing::TakeOver,
            Some(r) => Standing::Held(format!(
                "{} pid {} on {}, until {} unless renewed",
                r.holder,
                r.pid,
                r.host,
                crate::clock::fmt_ts(r.expires_at)
            )),
            // unreadable: held for one expiry after it was written, like any version
            None if self.written + chrono_expiry() <= now => Standing::TakeOver,
            None => Standing::Held(format!("unreadable lease version {}", self.token)),
        }
    }
}

/// What the holder knows about its lease.
#[derive(Debug)]
struct Held {
    token: u64,
    /// Until when, by this process's monotonic clock, the lease is surely held.
    deadline: Instant,
    lost: Option<String>,
}

#[derive(Debug)]
struct Shared {
    store: Store,
    clock: Arc<dyn Clock>,
    name: String,
    holder: String,
    host: String,
    acquired_at: DateTime<Utc>,
    state: tokio::sync::Mutex<Held>,
    stop: tokio::sync::Notify,
}

impl Shared {
    fn record(&self, token: u64, now: DateTime<Utc>, released: bool) -> Vec<u8> {
        let r = LeaseV1 {
            format: FORMAT.into(),
            version: 1,
            token,
            holder: self.holder.clone(),
            host: self.host.clone(),
            pid: std::process::id(),
            acquired_at: self.acquired_at,
            expires_at: now + chrono_expiry(),
            released,
        };
        serde_json::to_vec_pretty(&r).expect("serializes")
    }

    fn lost(&self, reason: impl Into<String>) -> LeaseLost {
        LeaseLost {
            lease: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// Fencing: still the latest version, and surely unexpired.
    async fn check(&self) -> Result<(), LeaseLost> {
        let st = self.state.lock().await;
        if let Some(reason) = &st.lost {
            return Err(self.lost(reason.clone()));
        }
        if Instant::now() + MARGIN > st.deadline {
            return Err(self.lost("not renewed in time"));
        }
        let latest = max_token(&self.store, &self.name)
            .await
            .map_err(|e| self.lost(format!("cannot read it: {e}")))?;
        match latest {
            Some(t) if t == st.token => Ok(()),
            Some(t) => Err(self.lost(format!(
                "version {t} is the latest; this run holds version {}",
                st.token
            ))),
            None => Err(self.lost("its versions were removed")),
        }
    }

    /// Writes the next version; records a loss when another holder got there first.
    async fn renew(&self) {
        let mut st = self.state.lock().await;
        if st.lost.is_some() {
            return;
        }
        let started = Instant::now();
        let attempt = async {
            match max_token(&self.store, &self.name).await? {
                Some(t) if t == st.token => {}
                other => return Ok(Err(format!("version {other:?} replaced this run's"))),
            }
            let next = st.token + 1;
            let body = self.record(next, self.clock.now(), false);
            let put = self
                .store
                .put_new(&layout::lease_version(&self.name, next), body)
                .await?;
            Ok::<_, crate::lake::LakeError>(match put {
                Put::Created => Ok(next),
                Put::AlreadyExists => Err(format!("version {next} was taken by another holder")),
            })
        };
        match attempt.await {
            Ok(Ok(next)) => {
                let old = std::mem::replace(&mut st.token, next);
                st.deadline = started + EXPIRY;
                drop(st);
                let _ = self
                    .store
                    .delete(&layout::lease_version(&self.name, old))
                    .await;
            }
            Ok(Err(reason)) => st.lost = Some(reason),
            // a failed write is tried again at the next tick, until the deadline
            Err(e) if Instant::now() + MARGIN > st.deadline => {
                st.lost = Some(format!("could not renew: {e}"))
            }
            Err(_) => {}
        }
    }
}

/// A lease held by this process, renewed in the background until [`Lease::release`].
/// Dropped without [`Lease::release`] (an error path), it stops renewing and expires.
pub(crate) struct Lease {
    shared: Arc<Shared>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shared.stop.notify_one();
    }
}

/// What commit steps check: every lease they run under is still held (fencing). Cheap to
/// clone; [`Fence::none`] for callers that hold none.
#[derive(Debug, Clone, Default)]
pub struct Fence(Vec<Arc<Shared>>);

impl Fence {
    pub fn none() -> Self {
        Fence::default()
    }

    pub(crate) fn of(leases: &[&Lease]) -> Self {
        Fence(leases.iter().map(|l| l.shared.clone()).collect())
    }

    /// Fails when any of the leases was lost: the caller must not commit.
    pub async fn check(&self) -> Result<(), LeaseLost> {
        for s in &self.0 {
            s.check().await?;
        }
        Ok(())
    }
}

impl Lease {
    /// Takes the batch lease for `holder` (e.g. `batch <id>`, `sweep-<id>`); returns whether
    /// an expired or dead holder's lease was taken over.
    pub(crate) async fn acquire(
        store: &Store,
        clock: Arc<dyn Clock>,
        holder: &str,
    ) -> Result<(Lease, bool), JobError> {
        Self::acquire_named(store, clock, layout::LEASE, holder).await
    }

    /// Takes the lease `name`, waiting up to `wait` while a live holder has it.
    pub(crate) async fn acquire_waiting(
        store: &Store,
        clock: Arc<dyn Clock>,
        name: &str,
        holder: &str,
        wait: Duration,
    ) -> Result<(Lease, bool), JobError> {
        let until = Instant::now() + wait;
        loop {
            match Self::acquire_named(store, clock.clone(), name, holder).await {
                Err(JobError::Busy { .. }) if Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => return other,
            }
        }
    }

    pub(crate) async fn acquire_named(
        store: &Store,
        clock: Arc<dyn Clock>,
        name: &str,
        holder: &str,
    ) -> Result<(Lease, bool), JobError> {
        let host = hostname();
        let busy = |holder: String| JobError::Busy {
            holder,
            path: store
                .local_path(&layout::lease_dir(name))
                .display()
                .to_string(),
        };
        for _ in 0..5 {
            let started = Instant::now();
            let now = clock.now();
            let previous = latest(store, name).await?;
            let (token, took_over) = match &previous {
                None => (1, false),
                Some(l) => match l.standing(now, &host) {
                    Standing::Free => (l.token + 1, false),
                    Standing::TakeOver => (l.token + 1, true),
                    Standing::Held(h) => return Err(busy(h)),
                },
            };
            let shared = Arc::new(Shared {
                store: store.clone(),
                clock: clock.clone(),
                name: name.to_string(),
                holder: holder.to_string(),
                host: host.clone(),
                acquired_at: now,
                state: tokio::sync::Mutex::new(Held {
                    token,
                    deadline: started + EXPIRY,
                    lost: None,
                }),
                stop: tokio::sync::Notify::new(),
            });
            let body = shared.record(token, now, false);
            let path = layout::lease_version(name, token);
            if store.put_new(&path, body).await? == Put::AlreadyExists {
                continue; // another taker won this version: look again
            }
            if let Some(l) = previous {
                let _ = store.delete(&layout::lease_version(name, l.token)).await;
            }
            let renewer = tokio::spawn(renew_loop(shared.clone()));
            let renewer = Some(renewer);
            return Ok((Lease { shared, renewer }, took_over));
        }
        Err(busy("the lease kept changing hands while taking it".into()))
    }

    /// This lease's fencing check (see [`Fence`]).
    pub(crate) async fn check(&self) -> Result<(), LeaseLost> {
        self.shared.check().await
    }

    /// Stops renewing and writes a released version (unless the lease was lost meanwhile).
    pub(crate) async fn release(mut self, store: &Store) -> Result<(), JobError> {
        self.shared.stop.notify_one();
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.await;
        }
        let st = self.shared.state.lock().await;
        if st.lost.is_some() {
            return Ok(());
        }
        let s = &self.shared;
        let next = st.token + 1;
        let body = s.record(next, s.clock.now(), true);
        if store
            .put_new(&layout::lease_version(&s.name, next), body)
            .await?
            == Put::Created
        {
            store
                .delete(&layout::lease_version(&s.name, st.token))
                .await?;
        }
        Ok(())
    }
}

async fn renew_loop(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = shared.stop.notified() => return,
            _ = tokio::time::sleep(EXPIRY / 3) => shared.renew().await,
        }
        if shared.state.lock().await.lost.is_some() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn at(s: &str) -> Arc<FakeClock> {
        Arc::new(FakeClock::new(
            DateTime::parse_from_rfc3339(s).unwrap().to_utc(),
        ))
    }

    fn plant(store: &Store, token: u64, host: &str, expires_at: &str) {
        let r = LeaseV1 {
            format: FORMAT.into(),
            version: 1,
            token,
            holder: "batch of a killed pod".into(),
            host: host.into(),
            pid: 1,
            acquired_at: DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                .unwrap()
                .to_utc(),
            expires_at: DateTime::parse_from_rfc3339(expires_at).unwrap().to_utc(),
            released: false,
        };
        let p = store.local_path(&layout::lease_version(layout::LEASE, token));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, serde_json::to_vec(&r).unwrap()).unwrap();
    }

    #[test]
    fn another_hosts_lease_is_respected_until_it_expires_then_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_local(dir.path(), true).unwrap();
        plant(&store, 7, "pod-elsewhere", "2026-01-01T00:01:00Z");
        rt().block_on(async {
            let early = Lease::acquire(&store, at("2026-01-01T00:00:30Z"), "b").await;
            assert!(matches!(early, Err(JobError::Busy { .. })), "unexpired");
            let (lease, took_over) = Lease::acquire(&store, at("2026-01-01T00:02:00Z"), "b")
                .await
                .unwrap();
            assert!(took_over);
            lease.check().await.unwrap();
            assert_eq!(max_token(&store, layout::LEASE).await.unwrap(), Some(8));
            lease.release(&store).await.unwrap();
            // released: the next taker does not count as a takeover
            let (lease, took_over) = Lease::acquire(&store, at("2026-01-01T00:02:01Z"), "c")
                .await
                .unwrap();
            assert!(!took_over);
            lease.release(&store).await.unwrap();
        });
    }

    #[test]
    fn of_two_takers_of_an_expired_lease_exactly_one_proceeds() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open_local(dir.path(), true).unwrap();
            plant(&store, 3, "pod-elsewhere", "2026-01-01T00:01:00Z");
            let later = at("2026-01-01T00:05:00Z");
            let results = rt().block_on(async {
                let a = tokio::spawn({
                    let (s, c) = (store.clone(), later.clone());
                    async move { Lease::acquire(&s, c, "a").await }
                });
                let b = tokio::spawn({
                    let (s, c) = (store.clone(), later.clone());
                    async move { Lease::acquire(&s, c, "b").await }
                });
                let (a, b) = (a.await.unwrap(), b.await.unwrap());
                let won: Vec<Lease> = [a, b]
                    .into_iter()
                    .filter_map(|r| r.ok().map(|(l, _)| l))
                    .collect();
                let n = won.len();
                for l in won {
                    l.check().await.unwrap();
                    l.release(&store).await.unwrap();
                }
                n
            });
            assert_eq!(results, 1, "round {round}: exactly one taker proceeds");
        }
    }

    #[test]
    fn a_holder_whose_lease_was_taken_over_refuses_to_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_local(dir.path(), true).unwrap();
        rt().block_on(async {
            let clock = at("2026-01-01T00:00:00Z");
            let (a, _) = Lease::acquire(&store, clock.clone(), "a").await.unwrap();
            a.check().await.unwrap();
            // a pauses past its expiry (its renewals did not land); b takes over
            clock.advance(chrono::Duration::seconds(61));
            let (b, took_over) = Lease::acquire(&store, clock.clone(), "b").await.unwrap();
            assert!(took_over);
            let err = a.check().await.unwrap_err();
            assert!(err.to_string().contains("is the latest"), "{err}");
            assert!(Fence::of(&[&a]).check().await.is_err());
            b.check().await.unwrap();
            // a's release writes nothing over b's lease
            a.release(&store).await.unwrap();
            b.check().await.unwrap();
            b.release(&store).await.unwrap();
        });
    }

    #[test]
    fn renewal_moves_the_token_and_keeps_the_holder_valid() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_local(dir.path(), true).unwrap();
        rt().block_on(async {
            let clock = at("2026-01-01T00:00:00Z");
            let (a, _) = Lease::acquire(&store, clock.clone(), "a").await.unwrap();
            a.shared.renew().await;
            a.check().await.unwrap();
            assert_eq!(a.shared.state.lock().await.token, 2);
            // one version left behind
            let left = store.list(layout::lease_dir(layout::LEASE).as_ref()).await;
            assert_eq!(left.unwrap().len(), 1);
            a.release(&store).await.unwrap();
        });
    }
}
