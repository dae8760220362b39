//! `access`: the store's access policy (show, grant, revoke, approve, cancel, whoami), and
//! how every command learns who runs it.

use super::*;
use crate::access::{self, Role, Session};

/// `--actor`: the name to act under; the policy must map it to the OS user running the command.
#[derive(Debug, clap::Args, Clone, Default)]
pub struct ActorArg {
    /// Act under this name (recorded in the audit trail beside the OS user); only a name the
    /// access policy maps to the OS user running the command
    #[arg(long, env = "HOLDFAST_ACTOR")]
    pub actor: Option<String>,
}

/// Who runs this command, against the store's policy (a refused `--actor` is audited).
pub(super) async fn session(
    store: &Store,
    clock: Arc<dyn Clock>,
    actor: &ActorArg,
) -> Result<Session> {
    let os_user = access::identity::os_user();
    Ok(Session::open(store, clock, &os_user, actor.actor.as_deref()).await?)
}

#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Print the policy: principals, the names they may act as, roles and their tenants, pending requests
    #[command(after_help = "Example:\n  holdfast access show --store data")]
    Show {
        #[command(flatten)]
        s: StoreArgs,
        /// Output format
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Print who runs this command (the OS user) and what the policy lets them do
    #[command(after_help = "Example:\n  holdfast access whoami --store data")]
    Whoami {
        #[command(flatten)]
        s: StoreArgs,
        #[command(flatten)]
        who: ActorArg,
    },
    /// Ask to give a user roles (optionally per tenant) or names; another administrator approves
    ///
    /// Roles (optionally for some tenants only), names to act as, a display name. The first
    /// second person a sole administrator adds is applied at once.
    #[command(
        after_help = "Example:\n  holdfast access grant --store data --user ann --role investigator --tenant legacy-tenant --alias jdoe"
    )]
    Grant {
        #[command(flatten)]
        s: StoreArgs,
        #[command(flatten)]
        who: ActorArg,
        /// The OS user name
        #[arg(long)]
        user: String,
        /// admin, investigator, analyst, compliance, retention (repeat for several)
        #[arg(long = "role")]
        roles: Vec<Role>,
        /// Scope the roles given to these tenants (repeat; none: every tenant)
        #[arg(long = "tenant")]
        tenants: Vec<String>,
        /// A name the user may act as with --actor (repeat)
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// The person's name as shown in `access show` (the policy keys on the OS user)
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Ask to take roles or names from a user (neither: remove the user); another admin approves
    #[command(
        after_help = "Example:\n  holdfast access revoke --store data --user ann --alias jdoe"
    )]
    Revoke {
        #[command(flatten)]
        s: StoreArgs,
        #[command(flatten)]
        who: ActorArg,
        /// The OS user name
        #[arg(long)]
        user: String,
        /// A role to take away (repeatable)
        #[arg(long = "role")]
        roles: Vec<Role>,
        /// An --actor name to take away (repeatable)
        #[arg(long = "alias")]
        aliases: Vec<String>,
    },
    /// Approve a pending request (an administrator other than the one who asked) and apply it
    #[command(after_help = "Example:\n  holdfast access approve --store data --request R3")]
    Approve {
        #[command(flatten)]
        s: StoreArgs,
        #[command(flatten)]
        who: ActorArg,
        /// The request id (`holdfast access show` lists pending requests)
        #[arg(long)]
        request: String,
    },
    /// Withdraw a pending request
    #[command(after_help = "Example:\n  holdfast access cancel --store data --request R5")]
    Cancel {
        #[command(flatten)]
        s: StoreArgs,
        #[command(flatten)]
        who: ActorArg,
        /// The request id (`holdfast access show` lists pending requests)
        #[arg(long)]
        request: String,
    },
}

impl AccessCommand {
    pub(super) async fn run(self, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        let (s, who) = match &self {
            AccessCommand::Show { s, .. } => (s.clone(), ActorArg::default()),
            AccessCommand::Whoami { s, who }
            | AccessCommand::Grant { s, who, .. }
            | AccessCommand::Revoke { s, who, .. }
            | AccessCommand::Approve { s, who, .. }
            | AccessCommand::Cancel { s, who, .. } => (s.clone(), who.clone()),
        };
        let store = Store::open(&s.store, false)?;
        read_marker(&store).await?;
        let session = session(&store, clock, &who).await?;
        match self {
            AccessCommand::Show { format, .. } => show(&session.policy, format, out),
            AccessCommand::Whoami { .. } => whoami(&session, out),
            AccessCommand::Grant {
                user,
                roles,
                tenants,
                aliases,
                display_name,
                ..
            } => {
                if !tenants.is_empty() && roles.is_empty() {
                    return Err(Error::Usage(
                        "--tenant scopes the roles given: add --role".into(),
                    ));
                }
                let change = access::Change::Grant {
                    user,
                    roles,
                    tenants,
                    aliases,
                    display_name,
                };
                ask(&session, change, out).await
            }
            AccessCommand::Revoke {
                user,
                roles,
                aliases,
                ..
            } => {
                let change = access::Change::Revoke {
                    user,
                    roles,
                    aliases,
                };
                ask(&session, change, out).await
            }
            AccessCommand::Approve { request, .. } => {
                let (r, p) = access::admin::approve(&session, &request).await?;
                let _ = writeln!(
                    out,
                    "request {} approved ({}, asked by {}): policy version {}",
                    r.id, r.change, r.requested_by, p.sequence
                );
                Ok(())
            }
            AccessCommand::Cancel { request, .. } => {
                let r = access::admin::cancel(&session, &request).await?;
                let _ = writeln!(out, "request {} withdrawn ({})", r.id, r.change);
                Ok(())
            }
        }
    }
}

async fn ask(session: &Session, change: access::Change, out: &mut dyn Write) -> Result<()> {
    match access::admin::request(session, change).await? {
        access::admin::Outcome::Applied(p) => {
            let _ = writeln!(
                out,
                "applied (policy version {}): {}; from now on every change needs a second administrator's approval",
                p.sequence, p.reason
            );
        }
        access::admin::Outcome::Requested(r) => {
            let _ = writeln!(
                out,
                "request {} recorded: {}; another administrator approves it with `holdfast access approve --request {}`",
                r.id, r.change, r.id
            );
        }
    }
    Ok(())
}

fn roles_text(p: &access::policy::Principal) -> String {
    p.roles
        .iter()
        .map(|(r, reach)| match reach.tenants() {
            None => r.to_string(),
            Some(t) => format!("{r}({})", t.iter().cloned().collect::<Vec<_>>().join(",")),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn show(p: &access::Policy, format: Option<Format>, out: &mut dyn Write) -> Result<()> {
    if !p.exists() {
        return Err(Error::Unusable(
            "this store has no access policy; `holdfast init` records the first one".into(),
        ));
    }
    let rows: Vec<serde_json::Value> = p
        .principals
        .iter()
        .map(|(user, pr)| {
            let roles: serde_json::Map<String, serde_json::Value> = pr
                .roles
                .iter()
                .map(|(r, reach)| {
                    let t = reach.tenants().map(|t| t.iter().cloned().collect::<Vec<_>>());
                    (r.to_string(), serde_json::json!(t.unwrap_or_default()))
                })
                .collect();
            serde_json::json!({"user": user, "display_name": pr.display_name, "aliases": pr.aliases, "roles": roles})
        })
        .collect();
    if format.unwrap_or(Format::Table) != Format::Table {
        let doc = serde_json::json!({
            "sequence": p.sequence, "sha256": p.sha256, "committed_at": p.committed_at.map(crate::clock::fmt_ts),
            "committed_by": p.committed_by, "reason": p.reason, "principals": rows, "requests": p.requests,
        });
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&doc).expect("serializes")
        );
        return Ok(());
    }
    let _ = writeln!(
        out,
        "access policy version {} ({}), committed {} by {}: {}",
        p.sequence,
        p.sha256.as_deref().unwrap_or(""),
        p.committed_at.map(crate::clock::fmt_ts).unwrap_or_default(),
        p.committed_by.as_deref().unwrap_or(""),
        p.reason
    );
    for (user, pr) in &p.principals {
        let name = pr
            .display_name
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        let aliases = if pr.aliases.is_empty() {
            String::new()
        } else {
            let a: Vec<&str> = pr.aliases.iter().map(String::as_str).collect();
            format!("; acts as {}", a.join(", "))
        };
        let _ = writeln!(out, "  {user}{name}: {}{aliases}", roles_text(pr));
    }
    for r in &p.requests {
        let _ = writeln!(
            out,
            "  pending {}: {} (asked by {} at {})",
            r.id,
            r.change,
            r.requested_by,
            crate::clock::fmt_ts(r.requested_at)
        );
    }
    Ok(())
}

fn whoami(s: &Session, out: &mut dyn Write) -> Result<()> {
    let roles = s
        .policy
        .principals
        .get(&s.identity.os_user)
        .map(roles_text)
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "no role".into());
    let _ = writeln!(
        out,
        "os user {}, acting as {}: {roles}",
        s.identity.os_user, s.identity.actor
    );
    Ok(())
}
