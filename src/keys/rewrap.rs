//! `keys rewrap`: every wrapped DEK to the KEK's newest version, without a data byte
//! rewritten. Under the store's lease (never beside a batch or sweep) and an intent record:
//!
//! 1. what an interrupted job left is finished, and the store must match its signed head;
//! 2. data-file DEKs, a few hundred at a time: the backend rewraps them (Transit server-side,
//!    so holdfast never sees them), then each partition gets a new manifest version with the
//!    same files and the new wrappings (create-only, durable before the next step);
//! 3. DEKs of objects never rewritten (landing and failed segments, quarantine, the index
//!    secret): the new wrapping is written beside them, create-only;
//! 4. the signed head records the new manifest versions; the intent record is removed; one
//!    audit entry counts what moved; superseded rewrappings are removed.
//!
//! Killed anywhere, a rerun (or the next batch, which recovers the intent) finishes: every
//! step is idempotent, and a DEK already under the newest version is left alone.

use super::format::Rewrapped;
use super::inventory::{self, Held, Home};
use crate::access::Session;
use crate::audit::AuditEvent;
use crate::crypto::kms::{Kms, WrappedKey};
use crate::error::{Error, Result};
use crate::lake::layout::{self, Partition, REWRAPPED, RewrappedKeyPath};
use crate::lake::manifest::{self, Commit, Loaded};
use crate::storage::lease::{Fence, Lease};
use crate::storage::{Put, Store};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// DEKs per call to the backend's rewrap (Transit splits it further into its own batches).
const CHUNK: usize = 1024;
/// Manifest versions committed at once.
const COMMITS_AT_ONCE: usize = 16;

/// What a rewrap did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RewrapReport {
    pub rewrap_id: String,
    pub kek_id: String,
    pub to_version: u32,
    /// Data-file DEKs moved, and the partitions that got a new manifest version.
    pub data_files: u64,
    pub partitions: u64,
    pub landing: u64,
    pub failed: u64,
    /// Quarantine DEKs moved (each seals one batch's entries).
    pub quarantine: u64,
    pub index_secret: u64,
    /// DEKs already under the newest version.
    pub current: u64,
    /// Calls to the backend's rewrap.
    pub kms_rewrap_calls: u64,
    /// Superseded rewrappings removed.
    pub pruned: u64,
    /// Calls to the key service the rewrap made.
    pub kms: crate::crypto::kms::KmsCalls,
}

impl AuditEvent for RewrapReport {
    const ACTION: &'static str = "keys.rewrap";
}

impl std::fmt::Display for RewrapReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "rewrap {} to {} v{}",
            self.rewrap_id, self.kek_id, self.to_version
        )?;
        writeln!(
            f,
            "moved: {} data-file DEKs ({} partitions, new manifest versions), {} landing, {} failed, {} quarantine, {} index secret",
            self.data_files,
            self.partitions,
            self.landing,
            self.failed,
            self.quarantine,
            self.index_secret
        )?;
        write!(
            f,
            "already current: {}; backend rewrap calls: {}; superseded rewrappings removed: {}",
            self.current, self.kms_rewrap_calls, self.pruned
        )
    }
}

/// What a rewrap runs with; `progress(done, total)` is called as DEKs move.
pub struct RewrapContext<'a> {
    pub session: &'a Session,
    /// The store's key services (heads are signed with its platform key).
    pub kms: &'a dyn Kms,
    /// Rewrap under this tenant's own key instead of the platform's.
    pub tenant: Option<&'a str>,
    pub failpoints: &'a crate::hooks::Failpoints,
    pub progress: &'a (dyn Fn(u64, u64) + Sync),
}

/// Runs a rewrap (see the module docs).
pub async fn rewrap(ctx: &RewrapContext<'_>) -> Result<RewrapReport> {
    super::check_admin(ctx.session, "rewrap").await?;
    let (store, clock) = (&ctx.session.store, &ctx.session.clock);
    let now = clock.now();
    let random = rand::RngCore::next_u32(&mut rand::rng());
    let rewrap_id = format!("rewrap-{}", layout::batch_id(now, random));
    let (lease, _) = Lease::acquire(store, clock.clone(), &rewrap_id).await?;
    let fence = Fence::of(&[&lease]);
    let result = run(ctx, &rewrap_id, now, &fence).await;
    lease.release(store).await?;
    result
}

async fn run(
    ctx: &RewrapContext<'_>,
    rewrap_id: &str,
    now: DateTime<Utc>,
    fence: &Fence,
) -> Result<RewrapReport> {
    let (store, audit, kms) = (&ctx.session.store, &ctx.session.audit, ctx.kms);
    let c = crate::head::Committer { store, kms, audit };
    let inv = inventory::take(store).await?;
    let damaged = Default::default();
    crate::head::intent::recover(c, &inv.latest, &damaged, now).await?;
    // recovery may have committed versions: read the manifests again
    let inv = inventory::take(store).await?;
    crate::head::check_current(store, audit, &inv.latest, &damaged).await?;
    let own = match ctx.tenant {
        Some(t) => Some(kms.tenant(t).ok_or_else(|| {
            Error::Usage(format!("tenant `{t}` has no key of its own in this store"))
        })?),
        None => None,
    };
    let target: &dyn Kms = own.as_deref().unwrap_or(kms);
    let info = target.info().await?;
    // after `keys migrate`, the platform's earlier KEKs' keys move to the new one
    let earlier = match ctx.tenant {
        None => super::platform::keks(store).await?.previous,
        Some(_) => Vec::new(),
    };
    let mut report = RewrapReport {
        rewrap_id: rewrap_id.to_string(),
        kek_id: info.kek_id.clone(),
        to_version: info.primary,
        ..Default::default()
    };
    let (stale, current): (Vec<&Held>, Vec<&Held>) = inv.keys.iter().partition(|k| {
        let w = &k.current;
        (w.kek_id == info.kek_id && w.kek_version < info.primary) || earlier.contains(&w.kek_id)
    });
    // keys of the other key domains (the platform's, bound tenants') are theirs to rewrap
    let domains = domain_keks(store).await?;
    let current: Vec<&Held> = current
        .into_iter()
        .filter(|k| k.current.kek_id == info.kek_id || !domains.contains(&k.current.kek_id))
        .collect();
    report.current = current.len() as u64;
    if let Some(other) = current.iter().find(|k| k.current.kek_id != info.kek_id) {
        return Err(Error::Unusable(format!(
            "DEK {} ({}) is wrapped under KEK {}, not the store's {}: rewrap moves keys between versions of one KEK",
            other.dek_id,
            other.home.place(),
            other.current.kek_id,
            info.kek_id
        )));
    }
    let total = stale.len() as u64;
    let moved = Moved {
        ctx,
        rewrap_id,
        now,
        fence,
        total,
    };
    if !stale.is_empty() {
        crate::head::intent::begin(store, rewrap_id, "rewrap", now).await?;
    }
    let mut change = crate::head::Change::new(format!("rewrap {rewrap_id}"));
    let (files, others): (Vec<&Held>, Vec<&Held>) = stale
        .iter()
        .partition(|k| matches!(k.home, Home::DataFile { .. }));
    moved
        .data_files(&files, &inv.latest, &mut change, &mut report)
        .await?;
    ctx.failpoints.hit("rewrap.after_manifests");
    moved.others(&others, &inv.newer, &mut report).await?;
    ctx.failpoints.hit("rewrap.before_head");
    crate::head::commit(c, &change, now).await?;
    if !stale.is_empty() {
        crate::head::intent::end(store, rewrap_id).await?;
    }
    report.pruned = prune(store, &inv.keys, &inv.newer).await?;
    report.kms = kms.calls();
    ctx.session.record(None, &report).await?;
    Ok(report)
}

/// The steps that move keys.
struct Moved<'a> {
    ctx: &'a RewrapContext<'a>,
    rewrap_id: &'a str,
    now: DateTime<Utc>,
    fence: &'a Fence,
    total: u64,
}

impl Moved<'_> {
    /// Rewraps `keys` in one call of the backend.
    async fn call(&self, keys: &[&Held], r: &mut RewrapReport) -> Result<Vec<WrappedKey>> {
        let pairs: Vec<(&str, &WrappedKey)> = keys
            .iter()
            .map(|k| (k.dek_id.as_str(), &k.current))
            .collect();
        let out = self.ctx.kms.rewrap(&pairs).await?;
        r.kms_rewrap_calls += 1;
        Ok(out)
    }

    fn done(&self, r: &RewrapReport) -> u64 {
        r.data_files + r.landing + r.failed + r.quarantine + r.index_secret
    }

    /// Data-file DEKs: rewrapped a chunk of whole partitions at a time, then one new
    /// manifest version per partition.
    async fn data_files(
        &self,
        files: &[&Held],
        latest: &BTreeMap<Partition, Loaded>,
        change: &mut crate::head::Change,
        r: &mut RewrapReport,
    ) -> Result<()> {
        let mut by_partition: BTreeMap<&Partition, Vec<&Held>> = BTreeMap::new();
        for k in files {
            if let Home::DataFile { partition, .. } = &k.home {
                by_partition.entry(partition).or_default().push(k);
            }
        }
        let mut chunk: Vec<(&Partition, Vec<&Held>)> = Vec::new();
        let mut size = 0;
        let mut parts = by_partition.into_iter().peekable();
        while let Some((p, keys)) = parts.next() {
            size += keys.len();
            chunk.push((p, keys));
            if size >= CHUNK || parts.peek().is_none() {
                self.commit_chunk(std::mem::take(&mut chunk), latest, change, r)
                    .await?;
                size = 0;
            }
        }
        Ok(())
    }

    async fn commit_chunk(
        &self,
        chunk: Vec<(&Partition, Vec<&Held>)>,
        latest: &BTreeMap<Partition, Loaded>,
        change: &mut crate::head::Change,
        r: &mut RewrapReport,
    ) -> Result<()> {
        let keys: Vec<&Held> = chunk.iter().flat_map(|(_, k)| k.iter().copied()).collect();
        let new = self.call(&keys, r).await?;
        let moved: HashMap<&str, WrappedKey> =
            keys.iter().map(|k| k.dek_id.as_str()).zip(new).collect();
        self.fence
            .check()
            .await
            .map_err(crate::job::JobError::from)?;
        self.ctx.failpoints.hit("rewrap.before_manifest");
        let (store, id, now) = (&self.ctx.session.store, self.rewrap_id, self.now);
        let committed: Vec<Commit> = futures::stream::iter(chunk.iter().map(|(p, _)| {
            let base = &latest[*p];
            let moved = &moved;
            manifest::commit_edit(store, p, base, id, now, move |m| {
                for f in &mut m.files {
                    if let Some(w) = moved.get(f.encryption.dek_id.as_str()) {
                        f.encryption.wrapped_dek = w.clone();
                    }
                }
            })
        }))
        .buffer_unordered(COMMITS_AT_ONCE)
        .try_collect()
        .await?;
        for c in committed {
            match c {
                Commit::Committed(l) => change.manifest(&l),
                Commit::LostRace { sequence } => {
                    return Err(Error::conflict(
                        format!("a manifest version {sequence} appeared during the rewrap"),
                        true,
                    ));
                }
            }
        }
        r.data_files += keys.len() as u64;
        r.partitions += chunk.len() as u64;
        (self.ctx.progress)(self.done(r), self.total);
        Ok(())
    }

    /// DEKs of objects never rewritten: a newer wrapping beside them, create-only.
    async fn others(
        &self,
        keys: &[&Held],
        newer: &super::Newer,
        r: &mut RewrapReport,
    ) -> Result<()> {
        let store = &self.ctx.session.store;
        for chunk in keys.chunks(CHUNK) {
            let new = self.call(chunk, r).await?;
            self.fence
                .check()
                .await
                .map_err(crate::job::JobError::from)?;
            for (k, w) in chunk.iter().zip(new) {
                let seq = newer.next_sequence(&k.dek_id);
                let path = RewrappedKeyPath::new(&k.dek_id, seq).ok_or_else(|| {
                    Error::Unusable(format!("DEK id {:?} cannot name an object", k.dek_id))
                })?;
                let record = Rewrapped {
                    dek_id: k.dek_id.clone(),
                    wrapped: w,
                    rewrapped_at: self.now,
                    rewrap_id: self.rewrap_id.to_string(),
                };
                match store.put_new(&path.to_path(), record.encode()).await? {
                    Put::Created => self.ctx.failpoints.hit("rewrap.after_rewrapped_key"),
                    Put::AlreadyExists => {
                        return Err(Error::conflict(
                            format!("{} appeared during the rewrap", path.to_path()),
                            true,
                        ));
                    }
                }
                match k.home {
                    Home::Landing { .. } => r.landing += 1,
                    Home::Failed { .. } => r.failed += 1,
                    Home::Quarantine { .. } => r.quarantine += 1,
                    Home::IndexSecret | Home::TenantIndexSecret { .. } => r.index_secret += 1,
                    Home::DataFile { .. } => {}
                }
            }
            (self.ctx.progress)(self.done(r), self.total);
        }
        Ok(())
    }
}

/// The KEK ids of the store's key domains: its platform keys (current and earlier) and every
/// bound tenant's own.
async fn domain_keks(store: &Store) -> Result<std::collections::BTreeSet<String>> {
    let platform = super::platform::keks(store).await?;
    let tenants = super::tenants::bindings(store).await?;
    let own = tenants.into_values().map(|(_, b)| b.kek_id);
    let all = std::iter::once(platform.current).chain(platform.previous);
    Ok(all.chain(own).collect())
}

/// Removes rewrappings superseded by a newer one of the same DEK, and those of DEKs no object
/// holds any more (a batch consumed the segment, a replay the entry); how many.
async fn prune(store: &Store, held: &[Held], newer: &super::Newer) -> Result<u64> {
    let live: std::collections::HashSet<&str> = held
        .iter()
        .filter(|k| !matches!(k.home, Home::DataFile { .. }))
        .map(|k| k.dek_id.as_str())
        .collect();
    let mut n = 0;
    for meta in store.list(REWRAPPED).await? {
        let Some(p) = RewrappedKeyPath::parse(&meta.location) else {
            continue;
        };
        let newest = newer.0.get(p.dek_id()).map(|(s, _)| *s);
        let superseded = newest.is_some_and(|s| p.sequence < s);
        // a sequence above the one read at the start is this run's own
        let own = newest.is_none_or(|s| p.sequence > s);
        if superseded || (!own && !live.contains(p.dek_id())) {
            store.delete(&meta.location).await?;
            n += 1;
        }
    }
    Ok(n)
}
