//! `holdfast verify`, store level: the lake checks ([`crate::lake::verify`]), then everything
//! the signed head vouches for, with no secret: the head chain (links, signatures, one key,
//! the keyring's when one is at hand, a published anchor), every partition's latest manifest
//! against the head (rollback, missing or emptied versions, partitions gone), the audit trail
//! (its chain, never shorter than the head's position, batch entries reconciled with the
//! manifests), the newest head's catalog (the head's versions, each latest manifest's bytes), the hold registry's latest version, the lock records of committed and held
//! files, and data files no manifest lists (a problem unless an interrupted job left them).

mod chain;

use super::intent;
use super::{ACCESS, AUDIT, Anchor, HOLDS, Head, HeadStarted, Position};
use crate::audit::{Audit, AuditEvent, BatchCommitted};
use crate::crypto::kms::{Kms, PublicKey};
use crate::lake::LakeError;
use crate::lake::layout::{self, Partition};
use crate::lake::manifest::Loaded;
use crate::lake::verify::{HeadSummary, LakeState, VerifyReport};
use crate::storage::Store;
use chain::{check_link, check_signer, keyring_signing_key};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What a verification may use besides the store.
#[derive(Clone, Copy)]
pub struct Options<'a> {
    pub audit: &'a Audit,
    /// Decrypt every record (`--deep`).
    pub deep: Option<&'a dyn Kms>,
    /// The keyring, when one is at hand: its public key must be the head's.
    pub keyring: Option<&'a dyn Kms>,
    pub anchor: Option<&'a Anchor>,
    /// How far back an audit entry's time may go (see `audit verify`).
    pub max_skew: chrono::Duration,
}

pub async fn verify_store(store: &Store, o: Options<'_>) -> Result<VerifyReport, LakeError> {
    let mut r = VerifyReport::default();
    let lake = crate::lake::verify::verify(store, o.deep, &mut r).await?;
    let head = check_heads(store, o, &mut r).await?;
    let entries = check_audit(o, head.as_ref(), &mut r).await;
    check_holds(store, head.as_ref(), &lake, &mut r).await?;
    check_access(store, head.as_ref(), &mut r).await?;
    if let Some(h) = &head {
        crate::lake::catalog::check(store, h, &mut r).await?;
    }
    match &head {
        Some(h) => check_partitions(h, &lake, &mut r),
        None if !lake.versions.is_empty() || r.audit_entries > 0 => r.problem(
            layout::HEADS,
            "the store has no signed head, though it has committed data or audit entries",
        ),
        None => {}
    }
    check_locks(store, &lake, &mut r).await?;
    check_uncommitted(store, &lake, &mut r).await?;
    // the log is derived from what was just checked: compared only when that holds
    if r.problems.is_empty() {
        check_table(store, &mut r).await;
    } else {
        r.notes.push(
            "the table log (_delta_log) was not compared: it derives from the heads and manifests, which fail above".into(),
        );
    }
    if let Some(entries) = entries {
        reconcile_batches(&entries, &lake, &mut r);
    }
    Ok(r)
}

/// The table log (`_delta_log`) against what the heads and manifests derive: a version
/// that differs or that no head derives is a problem; versions not yet published are a note
/// (a commit killed after its head; the next commit publishes them).
async fn check_table(store: &Store, r: &mut VerifyReport) {
    let c = match crate::lake::table::check(store).await {
        Ok(c) => c,
        Err(e) => {
            r.problem(
                layout::TABLE_LOG,
                format!("cannot derive the table log: {e}"),
            );
            return;
        }
    };
    for (v, why) in &c.differ {
        r.problem(
            layout::TableLogPath::new(*v).to_path().as_ref(),
            format!("{why}; `holdfast table rebuild` writes the log again from the manifests"),
        );
    }
    if let Some(first) = c.missing.first() {
        r.notes.push(format!(
            "the table log (_delta_log) stops before version {first}: {} version(s) for newer heads are not published yet; readers of the table see an older state until the next commit or `holdfast table rebuild`",
            c.missing.len()
        ));
    }
}

/// Walks the head chain; returns the newest head when the chain has one.
async fn check_heads(
    store: &Store,
    o: Options<'_>,
    r: &mut VerifyReport,
) -> Result<Option<Head>, LakeError> {
    let seqs = super::sequences(store).await?;
    let mut prev: Option<(Head, String)> = None;
    let mut chain_key: Option<PublicKey> = None;
    let mut by_seq: HashMap<u64, (String, PublicKey)> = HashMap::new();
    let keyring_key = keyring_signing_key(o, !seqs.is_empty(), r).await;
    for (i, &seq) in seqs.iter().enumerate() {
        r.head_versions += 1;
        let object = layout::head(seq).to_string();
        if seq != i as u64 + 1 {
            r.problem(
                &object,
                format!("head v{} is missing from the chain", i + 1),
            );
        }
        let loaded = match super::load(store, seq).await {
            Ok(l) => l,
            Err(e) => {
                r.problem(&object, e.to_string());
                prev = None;
                continue;
            }
        };
        let h = &loaded.head;
        check_signer(h, &object, &mut chain_key, keyring_key, r);
        check_link(h, seq, &object, prev.as_ref(), r);
        by_seq.insert(seq, (loaded.sha256.clone(), h.public_key));
        prev = Some((loaded.head, loaded.sha256));
    }
    if let Some(a) = o.anchor {
        r.anchor = Some(a.to_string());
        check_anchor(a, &by_seq, seqs.last().copied(), r);
    }
    let newest = prev.map(|(h, sha)| {
        r.head = Some(HeadSummary {
            sequence: h.sequence,
            sha256: sha,
            key_fingerprint: h.public_key.fingerprint(),
        });
        h
    });
    Ok(newest)
}

fn check_anchor(
    a: &Anchor,
    by_seq: &HashMap<u64, (String, PublicKey)>,
    last: Option<u64>,
    r: &mut VerifyReport,
) {
    let object = layout::head(a.sequence).to_string();
    match by_seq.get(&a.sequence) {
        None => r.problem(
            &object,
            format!(
                "the published anchor names head v{}, but the store's chain {} (rolled back or replaced)",
                a.sequence,
                last.map_or("is empty".to_string(), |l| format!("ends at v{l}"))
            ),
        ),
        Some((sha, _)) if *sha != a.sha256 => r.problem(
            &object,
            format!(
                "hashes to {sha}, but the published anchor says {}",
                a.sha256
            ),
        ),
        Some((_, key)) if key.fingerprint() != a.key_fingerprint => r.problem(
            &object,
            format!(
                "signed by {}, but the published anchor names {}",
                key.fingerprint(),
                a.key_fingerprint
            ),
        ),
        Some(_) => {}
    }
}

/// The audit chain, its position against the head, and restarted head chains. Returns the
/// entries (for the batch reconciliation) when they could all be read.
async fn check_audit(
    o: Options<'_>,
    head: Option<&Head>,
    r: &mut VerifyReport,
) -> Option<Vec<(crate::audit::Entry, String)>> {
    match o.audit.verify(o.max_skew).await {
        Ok(v) => {
            if let Some(b) = v.broken {
                r.problem(b.object, format!("audit trail: {}", b.problem));
            }
        }
        Err(e) => r.problem(crate::audit::PREFIX, e.to_string()),
    }
    let entries = match o.audit.entries().await {
        Ok(e) => e,
        Err(e) => {
            r.problem(crate::audit::PREFIX, e.to_string());
            return None;
        }
    };
    r.audit_entries = entries.len() as u64;
    let started: Vec<u64> = entries
        .iter()
        .filter(|(e, _)| e.action == HeadStarted::ACTION)
        .map(|(e, _)| e.sequence)
        .collect();
    if started.len() > 1 {
        r.problem(
            layout::HEADS,
            format!("the head chain was started again (audit entries {started:?}): earlier heads were removed"),
        );
    }
    if head.is_none() && !started.is_empty() {
        r.problem(
            layout::HEADS,
            format!(
                "the head chain is gone (audit entry {} started it)",
                started[0]
            ),
        );
    }
    if let Some(pos) = head.and_then(|h| h.registries.get(AUDIT)) {
        let at = entries.iter().find(|(e, _)| e.sequence == pos.sequence);
        match at {
            None => r.problem(
                crate::audit::PREFIX,
                format!(
                    "the audit trail has {} entr(ies), but the head records entry {} (truncated)",
                    entries.len(),
                    pos.sequence
                ),
            ),
            Some((_, sha)) if *sha != pos.sha256 => r.problem(
                layout::AuditPath::new(pos.sequence).to_path().to_string(),
                format!(
                    "hashes to {sha}, but the head records {} (replaced)",
                    pos.sha256
                ),
            ),
            Some(_) => {}
        }
    }
    Some(entries)
}

/// The access policy changes without a head commit (its own chain, checked apart), so the
/// head's position must still be in that chain with the same hash, and the chain not shorter.
async fn check_access(
    store: &Store,
    head: Option<&Head>,
    r: &mut VerifyReport,
) -> Result<(), LakeError> {
    let Some(pos) = head.and_then(|h| h.registries.get(ACCESS)) else {
        return Ok(());
    };
    let path = layout::access_version(pos.sequence);
    match store.get_opt(&path).await? {
        None => r.problem(
            path.to_string(),
            format!(
                "the head records access policy v{}, but it is gone (rolled back)",
                pos.sequence
            ),
        ),
        Some(bytes) => {
            let sha = crate::lake::manifest::sha256_hex(&bytes);
            if sha != pos.sha256 {
                r.problem(
                    path.to_string(),
                    format!(
                        "hashes to {sha}, but the head records {} (replaced)",
                        pos.sha256
                    ),
                );
            }
        }
    }
    Ok(())
}

async fn check_holds(
    store: &Store,
    head: Option<&Head>,
    lake: &LakeState,
    r: &mut VerifyReport,
) -> Result<(), LakeError> {
    let (registry, sha) = match crate::retention::hold::load(store).await {
        Ok(x) => x,
        Err(e) => {
            r.problem("holds", e.to_string());
            return Ok(());
        }
    };
    let found = sha.map(|sha256| Position {
        sequence: registry.sequence,
        sha256,
    });
    if let Some(h) = head
        && h.registries.get(HOLDS) != found.as_ref()
    {
        let say = |p: Option<&Position>| {
            p.map_or("none".to_string(), |p| {
                format!("v{} ({})", p.sequence, p.sha256)
            })
        };
        r.problem(
            "holds",
            format!(
                "the hold registry's latest version is {}, but the head records {}",
                say(found.as_ref()),
                say(h.registries.get(HOLDS))
            ),
        );
    }
    // every file an active hold lists carries the legal-hold flag
    let committed: HashSet<&str> = lake
        .latest
        .values()
        .flat_map(|l| l.manifest.files.iter().map(|f| f.path.as_str()))
        .collect();
    for h in registry.holds.iter().filter(|h| h.active()) {
        for f in &h.files {
            let path = match layout::locate(f) {
                Ok(p) => p,
                Err(e) => {
                    r.problem(f, e.to_string());
                    continue;
                }
            };
            if !committed.contains(f.as_str()) && store.head(&path).await?.is_none() {
                continue;
            }
            match store.lock(&path).await {
                Ok(l) if l.legal_hold => {}
                Ok(_) => r.problem(
                    f,
                    format!(
                        "hold {} lists it, but its legal-hold flag is off",
                        h.hold_id
                    ),
                ),
                Err(e) => r.problem(f, e.to_string()),
            }
        }
    }
    Ok(())
}

/// Every partition against the head: same latest version, same hash.
fn check_partitions(head: &Head, lake: &LakeState, r: &mut VerifyReport) {
    for (p, pos) in &head.partitions {
        let object = layout::manifest(p, pos.sequence).to_string();
        let newest = lake.versions.get(p).and_then(|v| v.last().copied());
        match newest {
            None => r.problem(
                &object,
                format!(
                    "partition {p}: the head records manifest v{}, but the partition has no manifests",
                    pos.sequence
                ),
            ),
            Some(n) if n < pos.sequence => r.problem(
                &object,
                format!(
                    "partition {p}: the latest manifest is v{n}, older than the v{} the head records (rolled back or removed)",
                    pos.sequence
                ),
            ),
            Some(n) if n > pos.sequence => r.problem(
                layout::manifest(p, n).to_string(),
                format!(
                    "partition {p}: manifest v{n} is newer than the v{} the head records (committed outside holdfast, or by an interrupted job the next batch recovers)",
                    pos.sequence
                ),
            ),
            Some(_) => match lake.latest.get(p) {
                Some(l) if l.sha256 == pos.sha256 => {}
                Some(l) => r.problem(
                    &object,
                    format!("hashes to {}, but the head records {}", l.sha256, pos.sha256),
                ),
                None => r.problem(&object, "unreadable, but the head records it"),
            },
        }
    }
    for (p, v) in &lake.versions {
        if !head.partitions.contains_key(p) {
            r.problem(
                layout::manifest(p, *v.last().unwrap_or(&0)).to_string(),
                format!("partition {p} is not recorded by the head"),
            );
        }
    }
}

/// Committed and rewritten-but-stored files keep a lock to their last record's expiry.
async fn check_locks(
    store: &Store,
    lake: &LakeState,
    r: &mut VerifyReport,
) -> Result<(), LakeError> {
    for l in lake.latest.values() {
        let stored = l
            .manifest
            .removed
            .iter()
            .filter(|g| g.awaiting_deletion())
            .map(|g| (g.path.as_str(), g.latest_expiry));
        let files = l
            .manifest
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.latest_expiry));
        for (f, until) in files.chain(stored) {
            let path = match layout::locate(f) {
                Ok(p) => p,
                Err(e) => {
                    r.problem(f, e.to_string());
                    continue;
                }
            };
            if store.head(&path).await?.is_none() {
                continue; // a missing committed file is reported by the lake checks
            }
            match store.lock(&path).await {
                Ok(lock) => match lock.retain_until {
                    Some(u) if u >= until => {}
                    Some(u) => r.problem(
                        f,
                        format!(
                            "retained until {}, before its last record expires ({})",
                            crate::clock::fmt_ts(u),
                            crate::clock::fmt_ts(until)
                        ),
                    ),
                    None => r.problem(f, "its lock record is missing"),
                },
                Err(e) => r.problem(f, format!("lock record: {e}")),
            }
        }
    }
    Ok(())
}

/// Data files no manifest lists: an interrupted job's leftovers, or a problem.
async fn check_uncommitted(
    store: &Store,
    lake: &LakeState,
    r: &mut VerifyReport,
) -> Result<(), LakeError> {
    let listed = intent::listed_files(&lake.latest);
    let jobs = match intent::pending(store).await {
        Ok(j) => j,
        Err(e) => {
            r.problem(layout::INTENTS, e.to_string());
            Vec::new()
        }
    };
    for meta in store.list(layout::LAKE).await? {
        let path = meta.location.as_ref();
        if listed.contains(path) {
            continue;
        }
        if intent::writer(&meta.location, &jobs).is_some() {
            r.leftovers.push(path.to_string());
        } else {
            r.orphans.push(path.to_string());
            r.problem(
                path,
                "no manifest lists this data file, and no interrupted batch or sweep wrote it",
            );
        }
    }
    Ok(())
}

/// Each `batch` audit entry names files the manifests committed, and every batch whose files
/// the manifests list has its `batch` entry.
fn reconcile_batches(
    entries: &[(crate::audit::Entry, String)],
    lake: &LakeState,
    r: &mut VerifyReport,
) {
    let mut audited: BTreeMap<&str, u64> = BTreeMap::new();
    let known: HashSet<&str> = lake
        .latest
        .values()
        .flat_map(|l| {
            l.manifest
                .files
                .iter()
                .map(|f| f.path.as_str())
                .chain(l.manifest.removed.iter().map(|g| g.path.as_str()))
        })
        .collect();
    for (e, _) in entries
        .iter()
        .filter(|(e, _)| e.action == BatchCommitted::ACTION)
    {
        let Some(id) = e.details["batch_id"].as_str() else {
            continue;
        };
        audited.insert(id, e.sequence);
        let files = e.details["committed_files"].as_array();
        for f in files.into_iter().flatten().filter_map(|f| f.as_str()) {
            if !known.contains(f) {
                r.problem(
                    layout::AuditPath::new(e.sequence).to_path().to_string(),
                    format!(
                        "batch {id} committed {f}, but no manifest lists it (now or in its history)"
                    ),
                );
            }
        }
    }
    let mut missing: BTreeMap<&str, &Partition> = BTreeMap::new();
    for l in lake.latest.values() {
        for f in &l.manifest.files {
            let by_batch = !f.batch_id.starts_with("sweep-");
            if by_batch && !audited.contains_key(f.batch_id.as_str()) {
                missing
                    .entry(f.batch_id.as_str())
                    .or_insert(&l.manifest.partition);
            }
        }
    }
    for (id, p) in missing {
        r.problem(
            crate::audit::PREFIX,
            format!(
                "batch {id} committed files (e.g. in {p}), but the audit trail has no entry for it"
            ),
        );
    }
}

/// Whether the store still matches its newest head (the batch checks this before it commits
/// anything, so holdfast never signs a rolled-back or altered manifest).
pub fn consistent(
    head: &Head,
    latest: &BTreeMap<Partition, Loaded>,
    damaged: &std::collections::BTreeSet<Partition>,
) -> Result<(), String> {
    for (p, pos) in head
        .partitions
        .iter()
        .filter(|(p, _)| !damaged.contains(*p))
    {
        match latest.get(p) {
            Some(l) if l.manifest.sequence == pos.sequence && l.sha256 == pos.sha256 => {}
            Some(l) => {
                return Err(format!(
                    "partition {p}: the latest manifest is v{} ({}), the head records v{} ({})",
                    l.manifest.sequence, l.sha256, pos.sequence, pos.sha256
                ));
            }
            None => {
                return Err(format!(
                    "partition {p}: the head records manifest v{}, but it has none",
                    pos.sequence
                ));
            }
        }
    }
    if let Some(p) = latest.keys().find(|p| !head.partitions.contains_key(*p)) {
        return Err(format!(
            "partition {p} has manifests the head does not record"
        ));
    }
    Ok(())
}
