//! Leases: one batch or sweep at a time per store (`batch`), and hold placement kept apart
//! from a sweep's rewrites (`holds`: a hold placed while a sweep computes which records
//! survive could otherwise miss records the sweep is dropping).
//!
//! A lease is a series of create-only objects `_leases/<name>/v<20 digits>.json`; the latest
//! version is the state, and its number is the holder's fencing token:
//! - **expiry:** each version says until when it holds ([`EXPIRY`] after it was written);
//! - **renewal:** the holder writes the next version every `EXPIRY / 3` from a background
//!   task, and stops committing if it could not renew for `EXPIRY * 3/4`;
//! - **takeover:** a version that has expired (or was released) is taken by creating the next
//!   version; of two takers one wins the create-only put, the other finds the lease held.
//!   Liveness is judged by expiry alone, so a holder that died on any machine is taken over
//!   the same way (the host and pid in a version are information for people, nothing more);
//! - **fencing:** before each commit step the holder checks ([`Lease::check`], [`Fence`])
//!   that its version is still the latest; one that was taken over stops.
//!
//! It needs nothing of a backend but create-only puts, listing and deletes, so it works the
//! same on every [`Store`]. A version's on-disk format is [`LeaseFile`] (`holdfast.lease`,
//! version 1).
//!
//! What it does not guarantee: expiry compares the clocks of different hosts, so their skew
//! must stay well under [`EXPIRY`]; a holder paused between its check and its write for longer
//! than the time left on its lease can still write once (S3 conditional writes would close that
//! window); removing a lease by hand defeats it.

use super::{Put, Store};
use crate::clock::Clock;
use crate::lake::{LakeError, layout};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a lease version holds unless renewed.
pub const EXPIRY: Duration = Duration::from_secs(60);
/// The holder stops committing when less than this is left (renewals failed meanwhile).
const MARGIN: Duration = Duration::from_secs(15);
const FORMAT: &str = "holdfast.lease";

/// One lease version as stored. Frozen: a new layout is a new variant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
pub(crate) enum LeaseFile {
    #[serde(rename = "1")]
    V1(LeaseV1),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeaseV1 {
    format: String,
    token: u64,
    holder: String,
    host: String,
    pid: u32,
    acquired_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    #[serde(default)]
    released: bool,
}

/// A lease version, as this holdfast reads it.
#[derive(Debug, Clone)]
pub(crate) struct LeaseRecord {
    pub(crate) token: u64,
    pub(crate) holder: String,
    pub(crate) host: String,
    pub(crate) pid: u32,
    pub(crate) acquired_at: DateTime<Utc>,
    pub(crate) expires_at: DateTime<Utc>,
    pub(crate) released: bool,
}

impl From<&LeaseRecord> for LeaseFile {
    fn from(r: &LeaseRecord) -> Self {
        LeaseFile::V1(LeaseV1 {
            format: FORMAT.into(),
            token: r.token,
            holder: r.holder.clone(),
            host: r.host.clone(),
            pid: r.pid,
            acquired_at: r.acquired_at,
            expires_at: r.expires_at,
            released: r.released,
        })
    }
}

impl From<LeaseFile> for LeaseRecord {
    fn from(f: LeaseFile) -> Self {
        match f {
            LeaseFile::V1(v) => LeaseRecord {
                token: v.token,
                holder: v.holder,
                host: v.host,
                pid: v.pid,
                acquired_at: v.acquired_at,
                expires_at: v.expires_at,
                released: v.released,
            },
        }
    }
}

impl LeaseRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        crate::format::encode(&LeaseFile::from(self))
    }

    /// Reads a lease version; another format or an unknown version is refused by name.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, crate::format::FormatError> {
        crate::format::decode::<LeaseFile>(bytes, FORMAT, &["1"]).map(LeaseRecord::from)
    }
}

/// Why a lease could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another holder has it and has not let it expire.
    #[error(
        "another job holds the lease on this store ({holder}); a lease its holder stops renewing expires by itself ({path})"
    )]
    Busy { holder: String, path: String },
    #[error(transparent)]
    Store(#[from] LakeError),
}

/// The holder of a lease lost it: taken over after it expired, or not renewed in time.
#[derive(Debug, thiserror::Error)]
#[error("the {lease} lease was lost ({reason}); this run commits nothing more, run it again")]
pub struct LeaseLost {
    pub lease: String,
    pub reason: String,
}

pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn chrono_expiry() -> chrono::Duration {
    chrono::Duration::from_std(EXPIRY).expect("small duration")
}

/// The latest version of a lease: its token and, if readable, its contents.
struct Latest {
    token: u64,
    record: Option<LeaseRecord>,
    written: DateTime<Utc>,
}

async fn max_token(store: &Store, name: &str) -> Result<Option<u64>, LakeError> {
    Ok(store
        .list(layout::lease_dir(name).as_ref())
        .await?
        .iter()
        .filter_map(|m| layout::parse_lease_version(&m.location))
        .filter(|(n, _)| n == name)
        .map(|(_, t)| t)
        .max())
}

async fn latest(store: &Store, name: &str) -> Result<Option<Latest>, LakeError> {
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
        Some(b) => LeaseRecord::decode(&b).ok().filter(|r| r.token == token),
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
    fn standing(&self, now: DateTime<Utc>) -> Standing {
        match &self.record {
            Some(r) if r.released => Standing::Free,
            Some(r) if r.expires_at <= now => Standing::TakeOver,
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
        LeaseRecord {
            token,
            holder: self.holder.clone(),
            host: self.host.clone(),
            pid: std::process::id(),
            acquired_at: self.acquired_at,
            expires_at: now + chrono_expiry(),
            released,
        }
        .encode()
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
            Ok::<_, LakeError>(match put {
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
    /// an expired holder's lease was taken over.
    pub(crate) async fn acquire(
        store: &Store,
        clock: Arc<dyn Clock>,
        holder: &str,
    ) -> Result<(Lease, bool), LeaseError> {
        Self::acquire_named(store, clock, layout::LEASE, holder).await
    }

    /// Takes the lease `name`, waiting up to `wait` while a live holder has it.
    pub(crate) async fn acquire_waiting(
        store: &Store,
        clock: Arc<dyn Clock>,
        name: &str,
        holder: &str,
        wait: Duration,
    ) -> Result<(Lease, bool), LeaseError> {
        let until = Instant::now() + wait;
        loop {
            match Self::acquire_named(store, clock.clone(), name, holder).await {
                Err(LeaseError::Busy { .. }) if Instant::now() < until => {
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
    ) -> Result<(Lease, bool), LeaseError> {
        let host = hostname();
        let busy = |holder: String| LeaseError::Busy {
            holder,
            path: format!("{}/{}", store.describe(), layout::lease_dir(name)),
        };
        for _ in 0..5 {
            let started = Instant::now();
            let now = clock.now();
            let previous = latest(store, name).await?;
            let (token, took_over) = match &previous {
                None => (1, false),
                Some(l) => match l.standing(now) {
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

    /// Test support: the version this holder holds, and a renewal now.
    #[cfg(test)]
    pub(crate) async fn token(&self) -> u64 {
        self.shared.state.lock().await.token
    }
    #[cfg(test)]
    pub(crate) async fn renew_now(&self) {
        self.shared.renew().await
    }

    /// This lease's fencing check (see [`Fence`]).
    pub(crate) async fn check(&self) -> Result<(), LeaseLost> {
        self.shared.check().await
    }

    /// Stops renewing and writes a released version (unless the lease was lost meanwhile).
    pub(crate) async fn release(mut self, store: &Store) -> Result<(), LeaseError> {
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
mod tests;
