//! The access policy: principals (OS user names), the names each may act as, their roles and
//! the tenants each role covers, and the changes waiting for a second administrator. Stored as
//! versions `access/v<20 digits>.json`, each a full snapshot naming its predecessor's SHA-256,
//! written create-only (as the hold registry): two writers cannot both commit the next
//! version, and the history is tamper-evident.

use super::format::{Commit, PolicyFile, PolicyV1};
use super::{AccessError, Role};
use crate::lake::LakeError;
use crate::lake::layout;
use crate::lake::manifest::sha256_hex;
use crate::storage::{Put, Store};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Which tenants a role covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    All,
    Tenants(BTreeSet<String>),
}

impl Reach {
    /// An empty list covers every tenant.
    pub fn of(tenants: Vec<String>) -> Self {
        if tenants.is_empty() {
            Reach::All
        } else {
            Reach::Tenants(tenants.into_iter().collect())
        }
    }

    pub fn covers(&self, tenant: &str) -> bool {
        match self {
            Reach::All => true,
            Reach::Tenants(t) => t.contains(tenant),
        }
    }

    /// The tenants, or `None` for all of them.
    pub fn tenants(&self) -> Option<&BTreeSet<String>> {
        match self {
            Reach::All => None,
            Reach::Tenants(t) => Some(t),
        }
    }
}

impl std::fmt::Display for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reach::All => write!(f, "all tenants"),
            Reach::Tenants(t) => {
                write!(
                    f,
                    "tenants {}",
                    t.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            }
        }
    }
}

/// What one OS user may do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Principal {
    pub display_name: Option<String>,
    /// Names they may act as (`--actor`), besides their own.
    pub aliases: BTreeSet<String>,
    pub roles: BTreeMap<Role, Reach>,
}

/// A change to the policy. Part of the stored format (version 1): fields are only added, with
/// defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// Adds the user if new; gives each role with `tenants` as its scope (empty: every
    /// tenant), adds the aliases, sets the display name.
    Grant {
        user: String,
        #[serde(default)]
        roles: Vec<Role>,
        #[serde(default)]
        tenants: Vec<String>,
        #[serde(default)]
        aliases: Vec<String>,
        #[serde(default)]
        display_name: Option<String>,
    },
    /// Takes the roles and aliases away; with neither, removes the user.
    Revoke {
        user: String,
        #[serde(default)]
        roles: Vec<Role>,
        #[serde(default)]
        aliases: Vec<String>,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |r: &[Role]| r.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ");
        match self {
            Change::Grant {
                user,
                roles,
                tenants,
                aliases,
                display_name,
            } => {
                write!(f, "grant to {user}")?;
                if !roles.is_empty() {
                    write!(f, " roles {}", names(roles))?;
                    if !tenants.is_empty() {
                        write!(f, " (tenants {})", tenants.join(", "))?;
                    }
                }
                if !aliases.is_empty() {
                    write!(f, " aliases {}", aliases.join(", "))?;
                }
                if let Some(d) = display_name {
                    write!(f, " display name {d:?}")?;
                }
                Ok(())
            }
            Change::Revoke {
                user,
                roles,
                aliases,
            } if roles.is_empty() && aliases.is_empty() => write!(f, "remove {user}"),
            Change::Revoke {
                user,
                roles,
                aliases,
            } => {
                write!(f, "revoke from {user}")?;
                if !roles.is_empty() {
                    write!(f, " roles {}", names(roles))?;
                }
                if !aliases.is_empty() {
                    write!(f, " aliases {}", aliases.join(", "))?;
                }
                Ok(())
            }
        }
    }
}

impl Change {
    /// The user the change is about.
    pub fn user(&self) -> &str {
        match self {
            Change::Grant { user, .. } | Change::Revoke { user, .. } => user,
        }
    }
}

/// A change waiting for a second administrator. Part of the stored format (version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub id: String,
    pub change: Change,
    /// The OS user who asked.
    pub requested_by: String,
    /// The name they acted under.
    pub requested_as: String,
    pub requested_at: DateTime<Utc>,
}

/// One version of the policy (sequence 0 and no principals: the store has none yet).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    pub sequence: u64,
    /// SHA-256 of this version's bytes.
    pub sha256: Option<String>,
    pub previous_sha256: Option<String>,
    pub committed_at: Option<DateTime<Utc>>,
    pub committed_by: Option<String>,
    pub reason: String,
    /// OS user name -> what they may do.
    pub principals: BTreeMap<String, Principal>,
    pub requests: Vec<Request>,
}

/// Names are short and printable: no spaces, no control characters.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '/')
}

impl Policy {
    /// The first policy of a store: `os_user` is its only administrator and holds every role
    /// over every tenant (one operator runs everything until a second person is added).
    pub fn first(os_user: &str) -> Self {
        let roles = Role::ALL.iter().map(|r| (*r, Reach::All)).collect();
        let mut principals = BTreeMap::new();
        principals.insert(
            os_user.to_string(),
            Principal {
                roles,
                ..Default::default()
            },
        );
        Policy {
            sequence: 1,
            reason: format!("first policy: {os_user} administers the store alone"),
            principals,
            ..Default::default()
        }
    }

    /// Whether the store has a policy at all.
    pub fn exists(&self) -> bool {
        self.sequence > 0
    }

    /// The tenants `user` holds `role` for, if they hold it.
    pub fn reach(&self, user: &str, role: Role) -> Option<&Reach> {
        self.principals.get(user)?.roles.get(&role)
    }

    /// Whether `user` may act under `name` (`--actor`).
    pub fn may_act_as(&self, user: &str, name: &str) -> bool {
        name == user
            || self
                .principals
                .get(user)
                .is_some_and(|p| p.aliases.contains(name))
    }

    /// Whether `user` holds `role` for `tenant` (`None`: for every tenant); the refusal
    /// reason otherwise.
    pub fn check(&self, user: &str, role: Role, tenant: Option<&str>) -> Result<(), String> {
        let reach = self.reach(user, role);
        match (reach, tenant) {
            (Some(Reach::All), _) => Ok(()),
            (Some(r), Some(t)) if r.covers(t) => Ok(()),
            (Some(r), Some(t)) => Err(format!(
                "{user} holds the {role} role for {r} only, not for tenant {t}"
            )),
            (Some(r), None) => Err(format!(
                "{user} holds the {role} role for {r} only; this needs it for every tenant"
            )),
            (None, _) if !self.exists() => Err(format!(
                "this store has no access policy yet, so nobody holds the {role} role (run `holdfast init` to record the first one)"
            )),
            (None, _) => Err(format!(
                "{user} lacks the {role} role (see `holdfast access show`)"
            )),
        }
    }

    pub fn admins(&self) -> Vec<&str> {
        self.principals
            .iter()
            .filter(|(_, p)| p.roles.contains_key(&Role::Admin))
            .map(|(u, _)| u.as_str())
            .collect()
    }

    /// The principals after `change`, checked: names valid, aliases unique and never another
    /// user's name, administrators over every tenant, and never fewer than two administrators
    /// once there were two (nor none at all), so a change can always still be approved.
    pub fn apply(&self, change: &Change) -> Result<BTreeMap<String, Principal>, String> {
        let mut next = self.principals.clone();
        match change {
            Change::Grant {
                user,
                roles,
                tenants,
                aliases,
                display_name,
            } => {
                if !valid_name(user) {
                    return Err(format!("{user:?} is not a user name"));
                }
                if roles.contains(&Role::Admin) && !tenants.is_empty() {
                    return Err(
                        "the admin role covers the whole store: give it without --tenant".into(),
                    );
                }
                if roles.is_empty() && aliases.is_empty() && display_name.is_none() {
                    return Err("nothing to grant: give --role, --alias or --display-name".into());
                }
                let p = next.entry(user.clone()).or_default();
                for r in roles {
                    p.roles.insert(*r, Reach::of(tenants.clone()));
                }
                p.aliases.extend(aliases.iter().cloned());
                if display_name.is_some() {
                    p.display_name = display_name.clone();
                }
            }
            Change::Revoke {
                user,
                roles,
                aliases,
            } => {
                let Some(p) = next.get_mut(user) else {
                    return Err(format!("{user} is not in the access policy"));
                };
                if roles.is_empty() && aliases.is_empty() {
                    next.remove(user);
                } else {
                    for r in roles {
                        if p.roles.remove(r).is_none() {
                            return Err(format!("{user} does not hold the {r} role"));
                        }
                    }
                    for a in aliases {
                        if !p.aliases.remove(a) {
                            return Err(format!("{user} has no alias {a}"));
                        }
                    }
                }
            }
        }
        check_principals(&next)?;
        let admins = |m: &BTreeMap<String, Principal>| {
            m.values()
                .filter(|p| p.roles.contains_key(&Role::Admin))
                .count()
        };
        let (before, after) = (admins(&self.principals), admins(&next));
        if after == 0 || (before >= 2 && after < 2) {
            return Err(format!(
                "this would leave {after} administrator(s); keep at least two (add the replacement first), so that every later change can still be approved"
            ));
        }
        Ok(next)
    }
}

/// Aliases are valid names, claimed by one user each, and never another user's own name.
fn check_principals(m: &BTreeMap<String, Principal>) -> Result<(), String> {
    let mut claimed: BTreeMap<&str, &str> = BTreeMap::new();
    for (user, p) in m {
        if p.display_name
            .as_ref()
            .is_some_and(|d| d.len() > 200 || d.chars().any(char::is_control))
        {
            return Err(format!(
                "{user}: the display name is too long or not printable"
            ));
        }
        for a in &p.aliases {
            if !valid_name(a) {
                return Err(format!("{a:?} is not a name to act as"));
            }
            if m.contains_key(a) && a != user {
                return Err(format!(
                    "{a} is another user's own name; {user} cannot act as it"
                ));
            }
            if let Some(other) = claimed.insert(a, user) {
                return Err(format!("{a} is already an alias of {other}"));
            }
        }
    }
    Ok(())
}

fn corrupt(sequence: u64, problem: String) -> AccessError {
    AccessError::Lake(LakeError::Corrupt {
        object: layout::access_version(sequence).to_string(),
        problem,
    })
}

async fn sequences(store: &Store) -> Result<Vec<u64>, LakeError> {
    store
        .versions(layout::ACCESS, layout::parse_access_version)
        .await
}

const VERSIONS: &[&str] = &["1"];

fn decode(sequence: u64, bytes: &[u8]) -> Result<Policy, AccessError> {
    let file: PolicyFile = crate::format::decode(bytes, super::format::FORMAT, VERSIONS)
        .map_err(|e| corrupt(sequence, format!("not an access policy: {e}")))?;
    let p = file
        .into_policy(sha256_hex(bytes))
        .map_err(|e| corrupt(sequence, e))?;
    if p.sequence != sequence {
        return Err(corrupt(sequence, format!("says sequence {}", p.sequence)));
    }
    Ok(p)
}

/// The latest version (an empty policy when the store has none).
pub async fn load(store: &Store) -> Result<Policy, AccessError> {
    let Some(&seq) = sequences(store).await?.last() else {
        return Ok(Policy::default());
    };
    let bytes = store.get(&layout::access_version(seq)).await?;
    decode(seq, &bytes)
}

/// The newest version's sequence and SHA-256 (for the store head), if any.
pub async fn head(store: &Store) -> Result<Option<(u64, String)>, AccessError> {
    let p = load(store).await?;
    Ok(p.sha256.map(|sha| (p.sequence, sha)))
}

/// Commits `next` (principals and requests) as the version after `base`; `None` when another
/// writer committed that version first (re-read and try again).
pub(crate) async fn commit(
    store: &Store,
    base: &Policy,
    principals: BTreeMap<String, Principal>,
    requests: Vec<Request>,
    c: &Commit<'_>,
) -> Result<Option<Policy>, AccessError> {
    let mut next = Policy {
        sequence: base.sequence + 1,
        principals,
        requests,
        ..Default::default()
    };
    let file = PolicyFile::V1(PolicyV1::of(&next, base.sha256.clone(), c));
    let bytes = crate::format::encode(&file);
    let path = layout::access_version(next.sequence);
    if store.put_new(&path, bytes.clone()).await? == Put::AlreadyExists {
        return Ok(None);
    }
    next.sha256 = Some(sha256_hex(&bytes));
    next.previous_sha256 = base.sha256.clone();
    next.committed_at = Some(c.at);
    next.committed_by = Some(c.by.to_string());
    next.reason = c.reason.to_string();
    Ok(Some(next))
}

/// Walks every version: each must decode, carry its own sequence, follow without a gap and
/// name its predecessor's hash. The problems found, as (object, problem).
pub async fn verify_chain(store: &Store) -> Result<Vec<(String, String)>, AccessError> {
    let mut problems = Vec::new();
    let mut prev: Option<String> = None;
    for (expected, seq) in (1u64..).zip(sequences(store).await?) {
        let path = layout::access_version(seq);
        let bytes = store.get(&path).await?;
        let problem = match decode(seq, &bytes) {
            Err(e) => Some(e.to_string()),
            Ok(_) if seq != expected => Some(format!(
                "access policy version {expected} is missing (found {seq} next)"
            )),
            Ok(p) if p.previous_sha256 != prev => Some(format!(
                "names previous hash {}, but version {} hashes to {}",
                p.previous_sha256.as_deref().unwrap_or("none"),
                seq - 1,
                prev.as_deref().unwrap_or("none")
            )),
            Ok(_) => None,
        };
        if let Some(p) = problem {
            problems.push((path.to_string(), p));
            break;
        }
        prev = Some(sha256_hex(&bytes));
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(user: &str, roles: &[Role], tenants: &[&str], aliases: &[&str]) -> Change {
        Change::Grant {
            user: user.into(),
            roles: roles.to_vec(),
            tenants: tenants.iter().map(|t| t.to_string()).collect(),
            aliases: aliases.iter().map(|t| t.to_string()).collect(),
            display_name: None,
        }
    }

    fn with(p: &Policy, c: &Change) -> Policy {
        Policy {
            principals: p.apply(c).unwrap(),
            ..p.clone()
        }
    }

    #[test]
    fn the_first_policy_gives_its_user_every_role() {
        let p = Policy::first("ops");
        for r in Role::ALL {
            assert!(p.check("ops", *r, Some("any")).is_ok());
            assert!(p.check("ops", *r, None).is_ok());
        }
        assert!(p.check("eve", Role::Investigator, None).is_err());
        assert_eq!(p.admins(), ["ops"]);
    }

    #[test]
    fn roles_can_be_scoped_to_tenants() {
        let p = with(
            &Policy::first("ops"),
            &grant("ann", &[Role::Admin, Role::Compliance], &[], &[]),
        );
        let p = with(&p, &grant("ann", &[Role::Investigator], &["t1", "t2"], &[]));
        assert!(p.check("ann", Role::Investigator, Some("t1")).is_ok());
        let e = p.check("ann", Role::Investigator, Some("t3")).unwrap_err();
        assert!(e.contains("tenant t3"), "{e}");
        assert!(p.check("ann", Role::Investigator, None).is_err());
        assert!(p.check("ann", Role::Compliance, Some("t3")).is_ok());
    }

    #[test]
    fn aliases_are_unique_and_never_another_users_name() {
        let p = with(
            &Policy::first("ops"),
            &grant("ann", &[Role::Admin], &[], &["alice"]),
        );
        assert!(p.may_act_as("ann", "alice") && p.may_act_as("ann", "ann"));
        assert!(!p.may_act_as("ops", "alice") && !p.may_act_as("eve", "eve2"));
        assert!(p.apply(&grant("ops", &[], &[], &["alice"])).is_err());
        assert!(p.apply(&grant("ops", &[], &[], &["ann"])).is_err());
        assert!(p.apply(&grant("ops", &[], &[], &["has space"])).is_err());
    }

    #[test]
    fn administrators_never_drop_below_two_once_there_are_two() {
        let one = Policy::first("ops");
        let remove = |u: &str| Change::Revoke {
            user: u.into(),
            roles: vec![],
            aliases: vec![],
        };
        assert!(one.apply(&remove("ops")).is_err());
        let two = with(&one, &grant("ann", &[Role::Admin], &[], &[]));
        assert!(two.apply(&remove("ann")).is_err());
        let three = with(&two, &grant("bo", &[Role::Admin], &[], &[]));
        assert!(three.apply(&remove("ann")).is_ok());
        assert!(
            one.apply(&grant("ann", &[Role::Admin], &["t1"], &[]))
                .is_err(),
            "admin is never scoped"
        );
    }
}
