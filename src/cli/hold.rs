//! `hold`: legal holds.

use super::*;

/// Store and actor of a hold change (the compliance role comes from the store's policy).
#[derive(Debug, clap::Args, Clone)]
pub struct HoldActor {
    #[command(flatten)]
    s: StoreArgs,
    #[command(flatten)]
    who: ActorArg,
}

#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Place a hold (body: holdId, tenantId, scope, retentionOverride); pins covered files before returning
    Apply {
        #[command(flatten)]
        who: HoldActor,
        #[arg(long)]
        file: PathBuf,
        /// Place it even though it covers no stored record (for records still to come)
        #[arg(long)]
        allow_empty: bool,
    },
    /// Ask for a hold's release (a second actor must approve)
    Release {
        #[command(flatten)]
        who: HoldActor,
        #[arg(long)]
        hold: String,
    },
    /// Approve a requested release (must be another actor); unpins files no other hold needs
    Approve {
        #[command(flatten)]
        who: HoldActor,
        #[arg(long)]
        hold: String,
    },
    /// What a hold body would cover: records per partition, and the files (changes nothing)
    Preview {
        #[command(flatten)]
        s: StoreArgs,
        #[arg(long)]
        file: PathBuf,
    },
    /// Reconcile active holds with the data and the storage flags; report and repair drift
    Sync {
        #[command(flatten)]
        s: StoreArgs,
    },
    /// List holds
    List {
        #[command(flatten)]
        s: StoreArgs,
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
}

/// Audits holds that lapsed on their expiration date (`legal_hold` / `lapsed`).
pub(super) async fn record_lapses(
    audit: &crate::audit::Audit,
    actor: &str,
    lapsed: &[crate::retention::hold::Lapse],
) -> Result<()> {
    for l in lapsed {
        let detail = format!("expirationDate {} reached", crate::clock::fmt_ts(l.at));
        audit
            .record(
                actor,
                None,
                &crate::audit::HoldChanged {
                    hold: &l.hold_id,
                    change: "lapsed",
                    files: l.unpinned.len(),
                    detail: &detail,
                },
            )
            .await?;
    }
    Ok(())
}

/// Commits the signed store head after a hold change (the registry is read afresh).
async fn commit_head(
    store: &Store,
    audit: &crate::audit::Audit,
    kms: Option<&dyn Kms>,
    what: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let kms =
        kms.ok_or_else(|| Error::Unusable("the keyring is needed to sign the store head".into()))?;
    let c = crate::head::Committer { store, kms, audit };
    crate::head::commit(c, &crate::head::Change::new(what), now).await?;
    Ok(())
}

pub(super) async fn hold_command(
    command: HoldCommand,
    clock: Arc<dyn Clock>,
    out: &mut dyn Write,
) -> Result<()> {
    use crate::retention::hold::{self, Hold, HoldRequest, Status};
    let (s, who) = match &command {
        HoldCommand::Apply { who, .. }
        | HoldCommand::Release { who, .. }
        | HoldCommand::Approve { who, .. } => (who.s.clone(), Some(who.who.clone())),
        HoldCommand::List { s, .. } | HoldCommand::Preview { s, .. } | HoldCommand::Sync { s } => {
            (s.clone(), None)
        }
    };
    let store = Store::open_local(&s.store, false)?;
    read_marker(&store).await?;
    // changes need the compliance role, for the hold's tenant, from the store's policy
    let session = match &who {
        Some(w) => Some(session(&store, clock.clone(), w).await?),
        None => None,
    };
    let audit = session.as_ref().map_or_else(
        || crate::audit::Audit::new(store.clone(), clock.clone()),
        |s| s.audit.clone(),
    );
    let actor = session
        .as_ref()
        .map_or_else(crate::access::identity::os_user, |s| {
            s.identity.actor.clone()
        });
    let os_user = session
        .as_ref()
        .map_or_else(crate::access::identity::os_user, |s| {
            s.identity.os_user.clone()
        });
    // every change is recorded in the signed store head: the keyring is needed up front
    let kms = match &command {
        HoldCommand::List { .. } | HoldCommand::Preview { .. } => None,
        _ => Some(open(&s).await?.1),
    };
    let head = |what: String| {
        let (store, audit, kms, clock) = (store.clone(), audit.clone(), kms.clone(), clock.clone());
        async move { commit_head(&store, &audit, kms.as_deref(), &what, clock.now()).await }
    };
    let refuse = |hold_id: String, reason: String| {
        let audit = audit.clone();
        let actor = actor.clone();
        async move {
            audit
                .record(
                    &actor,
                    None,
                    &crate::audit::HoldChanged {
                        hold: &hold_id,
                        change: "refused",
                        files: 0,
                        detail: &reason,
                    },
                )
                .await?;
            Err::<(), Error>(Error::Refused(reason))
        }
    };
    // the compliance role for `tenant` (None: a hold over every tenant)
    let may_hold = |tenant: Option<&str>| match &session {
        Some(s) => s
            .check(crate::access::Role::Compliance, tenant)
            .map_err(|r| format!("{r}; holds need the compliance role")),
        None => Ok(()),
    };
    // no compliance role at all: refused before anything is read
    let lacks_role = session.as_ref().is_some_and(|s| {
        s.policy
            .reach(&s.identity.os_user, crate::access::Role::Compliance)
            .is_none()
    });
    if let (true, Err(reason)) = (lacks_role, may_hold(None)) {
        let id = match &command {
            HoldCommand::Release { hold, .. } | HoldCommand::Approve { hold, .. } => hold.clone(),
            _ => String::new(),
        };
        return refuse(id, reason).await;
    }
    let (registry, sha) = hold::load(&store).await?;
    let now = clock.now();
    match command {
        HoldCommand::Preview { file, .. } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Error::io(format!("reading {}", file.display()), e))?;
            let req = HoldRequest::parse(&text)
                .map_err(|e| Error::Usage(format!("{}: not a hold body: {e}", file.display())))?;
            let h = Hold {
                hold_id: req.hold_id,
                tenant_id: req.tenant_id,
                scope: req.scope,
                retention_override: None,
                placed_by: String::new(),
                placed_at: now,
                status: Status::Active,
                lapses_at: None,
                files: Vec::new(),
                covered: Default::default(),
            };
            let p = hold::preview(&store, &h).await?;
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&p).expect("serializes")
            );
            Ok(())
        }
        HoldCommand::Sync { .. } => {
            let r = hold::sync(&store, now).await?;
            record_lapses(&audit, &actor, &r.lapsed).await?;
            // the report first: a store that no longer matches its head fails the commit below
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&r).expect("serializes")
            );
            head("hold sync".into()).await
        }
        HoldCommand::List { format, .. } => {
            let rows: Vec<serde_json::Value> = registry
                .holds
                .iter()
                .map(|h| serde_json::json!({"hold_id": h.hold_id, "tenant_id": h.tenant_id, "status": serde_json::to_value(&h.status).unwrap()["state"], "files": h.files.len(), "placed_by": h.placed_by, "placed_at": crate::clock::fmt_ts(h.placed_at), "lapses_at": h.lapses_at.map(crate::clock::fmt_ts)}))
                .collect();
            match format.unwrap_or(Format::Table) {
                Format::Table => {
                    for r in &rows {
                        let lapses = r["lapses_at"]
                            .as_str()
                            .map(|t| format!(" lapses={t}"))
                            .unwrap_or_default();
                        let _ = writeln!(
                            out,
                            "{} {} {} files={} by={} at={}{lapses}",
                            r["hold_id"].as_str().unwrap_or(""),
                            r["tenant_id"].as_str().unwrap_or("*"),
                            r["status"].as_str().unwrap_or(""),
                            r["files"],
                            r["placed_by"].as_str().unwrap_or(""),
                            r["placed_at"].as_str().unwrap_or("")
                        );
                    }
                }
                _ => {
                    for r in &rows {
                        let _ = writeln!(out, "{r}");
                    }
                }
            }
            Ok(())
        }
        HoldCommand::Apply {
            file, allow_empty, ..
        } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Error::io(format!("reading {}", file.display()), e))?;
            let req = HoldRequest::parse(&text)
                .map_err(|e| Error::Usage(format!("{}: not a hold body: {e}", file.display())))?;
            if let Err(reason) = may_hold(req.tenant_id.as_deref()) {
                return refuse(req.hold_id.clone(), reason).await;
            }
            let lapses_at = match req.lapse_date(now) {
                Ok(d) => d,
                Err(reason) => {
                    return refuse(
                        req.hold_id.clone(),
                        format!("hold {} not placed: {reason}", req.hold_id),
                    )
                    .await;
                }
            };
            // never while a sweep decides which records survive (it holds this lease briefly)
            let holder = format!("hold-apply-{}", std::process::id());
            let (lease, _) = crate::job::Lease::acquire_waiting(
                &store,
                clock.clone(),
                layout::HOLDS_LEASE,
                &holder,
                HOLDS_LEASE_WAIT,
            )
            .await?;
            let result = async {
                let (registry, sha) = hold::load(&store).await?;
                if registry
                    .holds
                    .iter()
                    .any(|h| h.hold_id == req.hold_id && h.active())
                {
                    return refuse(
                        req.hold_id.clone(),
                        format!("hold {} is already active", req.hold_id),
                    )
                    .await;
                }
                let mut h = Hold {
                    hold_id: req.hold_id,
                    tenant_id: req.tenant_id,
                    scope: req.scope,
                    retention_override: req.retention_override,
                    placed_by: actor.clone(),
                    placed_at: now,
                    status: Status::Active,
                    lapses_at,
                    files: Vec::new(),
                    covered: Default::default(),
                };
                let (found, examined) =
                    hold::covered_files_since(&store, &h, &Default::default()).await?;
                if found.is_empty() && !allow_empty {
                    let reason = format!(
                        "hold {} not placed: it covers no stored record (check tenantId and scope); pass --allow-empty to place it for records still to come",
                        h.hold_id
                    );
                    return refuse(h.hold_id.clone(), reason).await;
                }
                for (f, n) in found {
                    h.covered.insert(f.clone(), n);
                    h.files.push(f);
                }
                // pin at the storage layer before the hold is recorded and before we return
                for f in &h.files {
                    store
                        .legal_hold(&layout::locate(f)?, true)
                        .await?;
                }
                let id = h.hold_id.clone();
                let mut holds = registry.holds.clone();
                holds.push(h.clone());
                lease.check().await.map_err(crate::job::JobError::from)?;
                if !hold::commit(&store, &registry, sha, holds).await? {
                    return Err(Error::conflict(
                        "the hold registry changed meanwhile",
                        true,
                    ));
                }
                // a batch that committed files after our scan but read the registry before our
                // commit did not pin them for this hold: look again now that it is recorded
                let late = hold::covered_files_since(&store, &h, &examined).await?.0;
                for (f, _) in &late {
                    store
                        .legal_hold(&layout::locate(f)?, true)
                        .await?;
                }
                if !late.is_empty() {
                    lease.check().await.map_err(crate::job::JobError::from)?;
                    hold::add_files(&store, &id, &late).await?;
                }
                let n = h.files.len() + late.len();
                audit
                    .record(
                        &actor,
                        None,
                        &crate::audit::HoldChanged {
                            hold: &id,
                            change: "placed",
                            files: n,
                            detail: "",
                        },
                    )
                    .await?;
                head(format!("hold apply {id}")).await?;
                let _ = writeln!(out, "hold {id} placed: {n} file(s) pinned");
                Ok(())
            }
            .await;
            lease.release(&store).await?;
            result
        }
        HoldCommand::Release { hold: id, .. } => {
            let mut holds = registry.holds.clone();
            let Some(h) = holds
                .iter_mut()
                .find(|h| h.hold_id == id && h.status == Status::Active)
            else {
                return refuse(id.clone(), format!("no active hold {id}")).await;
            };
            if let Err(reason) = may_hold(h.tenant_id.as_deref()) {
                return refuse(id.clone(), reason).await;
            }
            h.status = Status::ReleaseRequested {
                by: actor.clone(),
                by_os_user: Some(os_user.clone()),
                at: now,
            };
            if !hold::commit(&store, &registry, sha, holds).await? {
                return Err(Error::conflict("the hold registry changed meanwhile", true));
            }
            audit
                .record(
                    &actor,
                    None,
                    &crate::audit::HoldChanged {
                        hold: &id,
                        change: "release_requested",
                        files: 0,
                        detail: "",
                    },
                )
                .await?;
            head(format!("hold release {id}")).await?;
            let _ = writeln!(
                out,
                "release of {id} requested; a second actor must approve it"
            );
            Ok(())
        }
        HoldCommand::Approve { hold: id, .. } => {
            let mut holds = registry.holds.clone();
            let Some(i) = holds.iter().position(|h| {
                h.hold_id == id && matches!(h.status, Status::ReleaseRequested { .. })
            }) else {
                return refuse(id.clone(), format!("hold {id} has no release request")).await;
            };
            if let Err(reason) = may_hold(holds[i].tenant_id.as_deref()) {
                return refuse(id.clone(), reason).await;
            }
            let Status::ReleaseRequested { by, by_os_user, .. } = holds[i].status.clone() else {
                unreachable!()
            };
            // two people: compared by OS user (a name is only what someone acted under)
            let same = match &by_os_user {
                Some(u) => u == &os_user,
                None => by == actor,
            };
            if same {
                return refuse(
                    id.clone(),
                    format!(
                        "{os_user} requested this release (as {by}); a different actor, logged in as another OS user, must approve it"
                    ),
                )
                .await;
            }
            holds[i].status = Status::Released {
                requested_by: by,
                approved_by: actor.clone(),
                requested_by_os_user: by_os_user,
                approved_by_os_user: Some(os_user.clone()),
                at: now,
            };
            let still: std::collections::HashSet<&String> = holds
                .iter()
                .filter(|h| h.active())
                .flat_map(|h| h.files.iter())
                .collect();
            let freed: Vec<String> = holds[i]
                .files
                .iter()
                .filter(|f| !still.contains(f))
                .cloned()
                .collect();
            if !hold::commit(&store, &registry, sha, holds.clone()).await? {
                return Err(Error::conflict("the hold registry changed meanwhile", true));
            }
            for f in &freed {
                store.legal_hold(&layout::locate(f)?, false).await?;
            }
            audit
                .record(
                    &actor,
                    None,
                    &crate::audit::HoldChanged {
                        hold: &id,
                        change: "released",
                        files: freed.len(),
                        detail: "",
                    },
                )
                .await?;
            head(format!("hold approve {id}")).await?;
            let _ = writeln!(
                out,
                "hold {id} released; {} file(s) unpinned ({} still held by other holds)",
                freed.len(),
                holds[i].files.len() - freed.len()
            );
            Ok(())
        }
    }
}
