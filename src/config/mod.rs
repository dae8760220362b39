//! Pipeline files (TOML): what to ingest, how to batch, and the retention policy table.
//! Parsing and [`Pipeline::validate`] are pure (no file, network or key access) and report
//! every problem, not the first. Secrets never live here; relative paths are relative to the
//! directory the command runs in.

use crate::sources::SourceKind;
use chrono::{DateTime, Months, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {}", problems.join("; "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Refused when present: roles live in the store's access policy (`holdfast access`),
    /// never in a file the caller picks.
    #[serde(default)]
    access: Option<toml::Value>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Local directory of the store (`--store` / `HOLDFAST_STORE` override it).
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub name: String,
    pub format: SourceKind,
    /// Tenant for shapes whose payloads name none (Genesys detail records, NICE contacts).
    #[serde(default)]
    pub tenant: Option<String>,
    /// NDJSON files to ingest.
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Landing bytes one batch consumes at most; the rest waits for the next batch.
    #[serde(default = "default_max_input_mb")]
    pub max_input_mb: u64,
    /// Memory budget for open data files; past it the largest row group is flushed early.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// Worker threads for decode/validate/encrypt (0 = one per core).
    #[serde(default)]
    pub threads: usize,
}

fn default_max_input_mb() -> u64 {
    4096
}
fn default_memory_mb() -> u64 {
    64
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_input_mb: default_max_input_mb(),
            memory_mb: default_memory_mb(),
            threads: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(default = "default_policy")]
    pub default_policy: String,
    /// First matching rule wins; a rule with no tenants / types matches all of them.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Custom policies, beside the presets FINRA_4511_6Y, SEC_17A4_6Y and MIFID2_5Y.
    #[serde(default)]
    pub policies: BTreeMap<String, Period>,
    /// Command run when a sweep is refused by a storage lock; the report arrives as JSON on
    /// its standard input (e.g. a script that posts to a webhook or pages someone).
    #[serde(default)]
    pub notify_command: Option<Vec<String>>,
    /// A file mixing expired records with unexpired ones is rewritten (survivors to a new
    /// file) only when its last record expires at least this many days after the sweep;
    /// closer than that it waits and goes whole. 0: always rewrite.
    #[serde(default = "default_rewrite_min_days")]
    pub rewrite_min_days: u32,
}

fn default_rewrite_min_days() -> u32 {
    7
}

fn default_policy() -> String {
    "FINRA_4511_6Y".into()
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            default_policy: default_policy(),
            rules: Vec::new(),
            policies: BTreeMap::new(),
            notify_command: None,
            rewrite_min_days: default_rewrite_min_days(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default)]
    pub tenants: Vec<String>,
    #[serde(default)]
    pub interaction_types: Vec<String>,
    pub policy: String,
}

/// A retention period, added to `occurredAt` in calendar terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Period {
    #[serde(default)]
    pub years: u32,
    #[serde(default)]
    pub months: u32,
    #[serde(default)]
    pub days: u32,
}

impl Period {
    pub fn expiry(self, from: DateTime<Utc>) -> DateTime<Utc> {
        from.checked_add_months(Months::new(self.years * 12 + self.months))
            .and_then(|t| t.checked_add_signed(chrono::Duration::days(self.days as i64)))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

pub const PRESETS: &[(&str, Period, &str)] = &[
    (
        "FINRA_4511_6Y",
        Period {
            years: 6,
            months: 0,
            days: 0,
        },
        "FINRA Rule 4511: 6 years where no other period applies",
    ),
    (
        "SEC_17A4_6Y",
        Period {
            years: 6,
            months: 0,
            days: 0,
        },
        "SEC Rule 17a-4: 6 years for the records it names",
    ),
    (
        "MIFID2_5Y",
        Period {
            years: 5,
            months: 0,
            days: 0,
        },
        "MiFID II art. 16(7): 5 years (up to 7 on the authority's request)",
    ),
];

/// The validated policy table: which policy a record gets and when it expires.
#[derive(Debug, Clone)]
pub struct Policies {
    periods: BTreeMap<Arc<str>, Period>,
    rules: Vec<(Vec<String>, Vec<String>, Arc<str>)>,
    default: Arc<str>,
}

impl Default for Policies {
    fn default() -> Self {
        RetentionConfig::default()
            .validate()
            .expect("defaults are valid")
    }
}

impl RetentionConfig {
    pub fn validate(&self) -> Result<Policies, Vec<String>> {
        let mut problems = Vec::new();
        let mut periods: BTreeMap<Arc<str>, Period> = PRESETS
            .iter()
            .map(|(n, p, _)| (Arc::from(*n), *p))
            .collect();
        for (name, p) in &self.policies {
            if PRESETS.iter().any(|(n, ..)| n == name) {
                problems.push(format!(
                    "retention.policies.{name}: a preset cannot be redefined"
                ));
            }
            if *p == Period::default() {
                problems.push(format!(
                    "retention.policies.{name}: a period of zero keeps nothing"
                ));
            }
            if name.is_empty()
                || name.len() > 48
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                problems.push(format!("retention.policies.{name}: ids are 1 to 48 letters, digits and _ (they name data files)"));
            }
            periods.insert(Arc::from(name.as_str()), *p);
        }
        let known = |id: &str| periods.keys().find(|k| k.as_ref() == id).cloned();
        let default = known(&self.default_policy).unwrap_or_else(|| {
            problems.push(format!(
                "retention.default_policy: unknown policy {}",
                self.default_policy
            ));
            Arc::from("")
        });
        let mut rules = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            match known(&r.policy) {
                Some(p) => rules.push((r.tenants.clone(), r.interaction_types.clone(), p)),
                None => problems.push(format!("retention.rules[{i}]: unknown policy {}", r.policy)),
            }
            for t in &r.interaction_types {
                if !crate::lake::layout::valid_type(t) {
                    problems.push(format!(
                        "retention.rules[{i}]: {t:?} is not an interaction type"
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(Policies {
                periods,
                rules,
                default,
            })
        } else {
            Err(problems)
        }
    }
}

impl Policies {
    /// Which policy a (tenant, type) gets under this table, and why.
    pub fn explain(&self, tenant: &str, interaction_type: &str) -> (Arc<str>, Period, String) {
        let found = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, (tenants, types, _))| {
                (tenants.is_empty() || tenants.iter().any(|t| t == tenant))
                    && (types.is_empty() || types.iter().any(|t| t == interaction_type))
            });
        let (id, why) = match found {
            Some((i, (tenants, types, p))) => (
                p.clone(),
                format!(
                    "retention.rules[{i}] matches first (tenants {}, interaction types {})",
                    if tenants.is_empty() {
                        "any".into()
                    } else {
                        tenants.join(", ")
                    },
                    if types.is_empty() {
                        "any".into()
                    } else {
                        types.join(", ")
                    }
                ),
            ),
            None => (
                self.default.clone(),
                "no rule matches: the default policy".to_string(),
            ),
        };
        let period = self.periods[&id];
        (id, period, why)
    }

    /// The policy for a record and its expiry.
    pub fn apply(
        &self,
        tenant: &str,
        interaction_type: &str,
        occurred_at: DateTime<Utc>,
    ) -> (Arc<str>, DateTime<Utc>) {
        let id = self
            .rules
            .iter()
            .find(|(tenants, types, _)| {
                (tenants.is_empty() || tenants.iter().any(|t| t == tenant))
                    && (types.is_empty() || types.iter().any(|t| t == interaction_type))
            })
            .map(|(_, _, p)| p)
            .unwrap_or(&self.default)
            .clone();
        let period = self.periods[&id];
        (id, period.expiry(occurred_at))
    }
}

impl Pipeline {
    pub fn parse(path: &std::path::Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let p = Self::parse(path, &text)?;
        p.validate(path)?;
        Ok(p)
    }

    /// Every problem at once. No I/O.
    pub fn validate(&self, path: &std::path::Path) -> Result<Policies, ConfigError> {
        let mut problems = Vec::new();
        if self.access.is_some() {
            problems.push("[access]: roles are no longer read from pipeline files; they live in the store's access policy (see `holdfast access show`, `holdfast access grant`)".into());
        }
        let policies = match self.retention.validate() {
            Ok(p) => Some(p),
            Err(mut e) => {
                problems.append(&mut e);
                None
            }
        };
        let mut names = std::collections::BTreeSet::new();
        for s in &self.sources {
            if !names.insert(&s.name) {
                problems.push(format!("sources: name {} is used twice", s.name));
            }
            if s.paths.is_empty() {
                problems.push(format!("sources.{}: no paths", s.name));
            }
        }
        if self.batch.memory_mb < 16 {
            problems.push("batch.memory_mb: at least 16".into());
        }
        if self.batch.max_input_mb == 0 {
            problems.push("batch.max_input_mb: at least 1".into());
        }
        match policies {
            Some(p) if problems.is_empty() => Ok(p),
            _ => Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn presets_and_rules() {
        let p = Pipeline::parse(
            "t.toml".as_ref(),
            r#"
            [retention]
            default_policy = "SEC_17A4_6Y"
            [[retention.rules]]
            interaction_types = ["SMS"]
            policy = "MIFID2_5Y"
            [[retention.rules]]
            tenants = ["bank-a"]
            policy = "KEEP_10Y"
            [retention.policies.KEEP_10Y]
            years = 10
            "#,
        )
        .unwrap();
        let pol = p.validate("t.toml".as_ref()).unwrap();
        let t = at("2024-02-29T12:00:00Z");
        assert_eq!(
            pol.apply("x", "SMS", t),
            (Arc::from("MIFID2_5Y"), at("2029-02-28T12:00:00Z"))
        );
        assert_eq!(pol.apply("bank-a", "CALL", t).0.as_ref(), "KEEP_10Y");
        assert_eq!(
            pol.apply("bank-a", "SMS", t).0.as_ref(),
            "MIFID2_5Y",
            "first match wins"
        );
        assert_eq!(
            pol.apply("x", "CALL", t),
            (Arc::from("SEC_17A4_6Y"), at("2030-02-28T12:00:00Z"))
        );
    }

    #[test]
    fn reports_every_problem() {
        let p = Pipeline::parse(
            "t.toml".as_ref(),
            r#"
            [retention]
            default_policy = "NOPE"
            [[retention.rules]]
            policy = "ALSO_NOPE"
            interaction_types = ["sms"]
            [batch]
            memory_mb = 1
            "#,
        )
        .unwrap();
        let ConfigError::Invalid { problems, .. } = p.validate("t.toml".as_ref()).unwrap_err()
        else {
            panic!()
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn roles_in_a_pipeline_file_are_refused() {
        let p = Pipeline::parse(
            "t.toml".as_ref(),
            "[access.roles]\nmallory = [\"investigator\"]\n",
        )
        .unwrap();
        let e = p.validate("t.toml".as_ref()).unwrap_err().to_string();
        assert!(e.contains("holdfast access"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(Pipeline::parse("t.toml".as_ref(), "[batch]\nmax_input = 3\n").is_err());
    }
}
