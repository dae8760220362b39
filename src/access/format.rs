//! The access policy as stored: `access/v<20 digits>.json`, format `holdfast.access`,
//! version 1. These types are frozen: a change is a new version with an upcast into the
//! runtime [`Policy`]; a reader refuses another format or a version it does not know
//! (`crate::format::decode`). A golden file (`fixtures/formats/access-policy-v1.json`) fails
//! a test on any silent change.

use super::Role;
#[cfg(test)]
use super::policy::Change;
use super::policy::{Policy, Principal, Reach, Request};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub(crate) const FORMAT: &str = "holdfast.access";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "version")]
pub(crate) enum PolicyFile {
    #[serde(rename = "1")]
    V1(PolicyV1),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyV1 {
    pub format: String,
    pub sequence: u64,
    /// SHA-256 of the previous version's bytes; `None` only for sequence 1.
    pub previous_sha256: Option<String>,
    pub committed_at: DateTime<Utc>,
    /// The OS user whose command committed this version (for an approval: the approver).
    pub committed_by: String,
    /// What this version changed, in words.
    pub reason: String,
    /// OS user name -> what they may do.
    pub principals: BTreeMap<String, PrincipalV1>,
    /// Changes waiting for a second administrator. [`Request`] and its change are stored as
    /// they are: they are part of format version 1 ([`super::policy::Change`]).
    #[serde(default)]
    pub requests: Vec<Request>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PrincipalV1 {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Names the user may act as (`--actor`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Role -> the tenants it covers; an empty list covers every tenant.
    pub roles: BTreeMap<Role, Vec<String>>,
}

/// Who committed a version, when, and why.
pub(crate) struct Commit<'a> {
    pub at: DateTime<Utc>,
    pub by: &'a str,
    pub reason: &'a str,
}

impl PolicyV1 {
    pub(crate) fn of(policy: &Policy, previous_sha256: Option<String>, c: &Commit) -> Self {
        let principals = policy
            .principals
            .iter()
            .map(|(user, p)| {
                let roles = p
                    .roles
                    .iter()
                    .map(|(r, reach)| {
                        let tenants = match reach {
                            Reach::All => Vec::new(),
                            Reach::Tenants(t) => t.iter().cloned().collect(),
                        };
                        (*r, tenants)
                    })
                    .collect();
                let v1 = PrincipalV1 {
                    display_name: p.display_name.clone(),
                    aliases: p.aliases.iter().cloned().collect(),
                    roles,
                };
                (user.clone(), v1)
            })
            .collect();
        PolicyV1 {
            format: FORMAT.into(),
            sequence: policy.sequence,
            previous_sha256,
            committed_at: c.at,
            committed_by: c.by.to_string(),
            reason: c.reason.to_string(),
            principals,
            requests: policy.requests.clone(),
        }
    }
}

impl PolicyFile {
    /// The runtime policy; `sha256` is the hash of the bytes it was read from.
    pub(crate) fn into_policy(self, sha256: String) -> Result<Policy, String> {
        let PolicyFile::V1(v1) = self;
        if v1.format != FORMAT {
            return Err(format!("format {:?}, expected {FORMAT:?}", v1.format));
        }
        let principals = v1
            .principals
            .into_iter()
            .map(|(user, p)| {
                let roles = p
                    .roles
                    .into_iter()
                    .map(|(r, t)| (r, Reach::of(t)))
                    .collect();
                let principal = Principal {
                    display_name: p.display_name,
                    aliases: p.aliases.into_iter().collect(),
                    roles,
                };
                (user, principal)
            })
            .collect();
        Ok(Policy {
            sequence: v1.sequence,
            sha256: Some(sha256),
            previous_sha256: v1.previous_sha256,
            committed_at: Some(v1.committed_at),
            committed_by: Some(v1.committed_by),
            reason: v1.reason,
            principals,
            requests: v1.requests,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Policy {
        let mut p = Policy::first("ops");
        p.sequence = 2;
        let change = Change::Grant {
            user: "ann".into(),
            roles: vec![Role::Investigator],
            tenants: vec!["tenant-1".into()],
            aliases: vec!["jdoe".into()],
            display_name: Some("Ann Example".into()),
        };
        p.requests.push(Request {
            id: "R2".into(),
            change,
            requested_by: "ops".into(),
            requested_as: "ops".into(),
            requested_at: DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
                .unwrap()
                .to_utc(),
        });
        p
    }

    fn encode(p: &Policy) -> Vec<u8> {
        let commit = Commit {
            at: DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
                .unwrap()
                .to_utc(),
            by: "ops",
            reason: "request R2: grant investigator (tenants tenant-1) to ann",
        };
        let file = PolicyFile::V1(PolicyV1::of(p, Some("ab".repeat(32)), &commit));
        crate::format::encode(&file)
    }

    fn read(bytes: &[u8]) -> Result<PolicyFile, crate::format::FormatError> {
        crate::format::decode(bytes, FORMAT, &["1"])
    }

    /// Format version 1 as committed; a change to it must be a new version.
    #[test]
    fn version_1_matches_its_golden_file() {
        let bytes = encode(&sample());
        crate::format::golden("access-policy-v1.json", &bytes);
        let p = read(&bytes).unwrap().into_policy("x".into()).unwrap();
        assert_eq!(p.principals, sample().principals);
        assert_eq!(p.requests, sample().requests);
    }

    #[test]
    fn unknown_versions_formats_and_fields_are_refused() {
        use crate::format::{FormatError, altered};
        let bytes = encode(&sample());
        let e = read(&altered(&bytes, "version", "2")).unwrap_err();
        assert!(matches!(e, FormatError::UnknownVersion { .. }), "{e}");
        let e = read(&altered(&bytes, "format", "holdfast.holds")).unwrap_err();
        assert!(matches!(e, FormatError::WrongFormat { .. }), "{e}");
        let e = read(&altered(&bytes, "surprise", "1")).unwrap_err();
        assert!(matches!(e, FormatError::Invalid { .. }), "{e}");
    }
}
