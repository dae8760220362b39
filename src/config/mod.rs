//! Pipeline files (TOML): what to ingest, how to batch, and the retention policy table.
//! Parsing and [`Pipeline::validate`] are pure (no file, network or key access) and report
//! every problem, not the first. Secrets never live here; relative paths are relative to the
//! directory the command runs in.

mod check;
mod kms;
mod retention;
mod serve;

pub use kms::{KmsBackend, KmsConfig};
pub use serve::ServeConfig;

pub use retention::{
    MAX_YEARS, PRESETS, Period, Policies, RetentionConfig, RetentionFloor, RuleConfig,
};

use crate::sources::SourceKind;
use check::{Shape, opt, req, ty};
use serde::Deserialize;
use std::path::PathBuf;

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
    /// The key service of the store's KEK (`None`: whatever the store is bound to; a new
    /// store gets the local keyring).
    #[serde(default)]
    pub kms: Option<KmsConfig>,
    /// `holdfast serve`'s settings.
    #[serde(default)]
    pub serve: Option<ServeConfig>,
    /// Refused when present: roles live in the store's access policy (`holdfast access`),
    /// never in a file the caller picks.
    #[serde(default)]
    access: Option<toml::Value>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The store: a directory (a path or `file:///path`), `s3://bucket/prefix` or
    /// `memory://name` (`--store` / `HOLDFAST_STORE` override it); `url` is the same key.
    #[serde(alias = "url")]
    pub path: Option<crate::storage::StoreUrl>,
    /// The retention floor `holdfast run` records when it creates the store (like
    /// `init --retention-floor-days`); an existing store keeps the floor it has.
    #[serde(default)]
    pub retention_floor_days: Option<u32>,
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

/// Most worker threads a batch may run.
pub const MAX_THREADS: usize = 256;
/// Longest `max_future_hours`: a year.
const MAX_FUTURE_HOURS: u32 = 24 * 366;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Landing bytes (raw, as ingested) one batch consumes at most; the rest waits.
    #[serde(default = "default_max_input_mb")]
    pub max_input_mb: u64,
    /// Memory budget for open data files and the records held back while a file's
    /// dictionary is learnt; past it the least recently written files are closed (a later
    /// record of their partition goes to a new file), then dictionaries are learnt sooner and
    /// row groups end early.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// Worker threads for decode/validate/encrypt (0 = one per core, at most 256).
    #[serde(default)]
    pub threads: usize,
    /// An event whose `occurredAt` is later than its arrival plus this many hours is
    /// quarantined (`event.occurred_at_future`) instead of stored.
    #[serde(default = "default_max_future_hours")]
    pub max_future_hours: u32,
}

fn default_max_input_mb() -> u64 {
    4096
}
fn default_memory_mb() -> u64 {
    64
}
fn default_max_future_hours() -> u32 {
    24
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_input_mb: default_max_input_mb(),
            memory_mb: default_memory_mb(),
            threads: 0,
            max_future_hours: default_max_future_hours(),
        }
    }
}

static STORE: Shape = Shape::Table(&[
    opt("path", Shape::Leaf(ty::<crate::storage::StoreUrl>)),
    opt("url", Shape::Leaf(ty::<crate::storage::StoreUrl>)),
    opt("retention_floor_days", Shape::Leaf(ty::<u32>)),
]);
static SOURCE: Shape = Shape::Table(&[
    req("name", Shape::Leaf(ty::<String>)),
    req("format", Shape::Leaf(ty::<SourceKind>)),
    opt("tenant", Shape::Leaf(ty::<String>)),
    req("paths", Shape::Leaf(ty::<Vec<PathBuf>>)),
]);
static BATCH: Shape = Shape::Table(&[
    opt("max_input_mb", Shape::Leaf(ty::<u64>)),
    opt("memory_mb", Shape::Leaf(ty::<u64>)),
    opt("threads", Shape::Leaf(ty::<usize>)),
    opt("max_future_hours", Shape::Leaf(ty::<u32>)),
]);
static SERVE: Shape = Shape::Table(&[
    opt("listen", Shape::Leaf(ty::<String>)),
    opt("allow_plain_http", Shape::Leaf(ty::<bool>)),
    opt("tls_cert", Shape::Leaf(ty::<PathBuf>)),
    opt("tls_key", Shape::Leaf(ty::<PathBuf>)),
    req("tokens", Shape::Leaf(ty::<PathBuf>)),
    opt("batch_every_secs", Shape::Leaf(ty::<u64>)),
    opt("batch_backlog_mb", Shape::Leaf(ty::<u64>)),
    opt("max_body_mb", Shape::Leaf(ty::<u64>)),
    opt("max_events_per_request", Shape::Leaf(ty::<u64>)),
    opt("max_backlog_mb", Shape::Leaf(ty::<u64>)),
    opt("flush_ms", Shape::Leaf(ty::<u64>)),
    opt("idempotency_keys", Shape::Leaf(ty::<usize>)),
    opt("request_timeout_secs", Shape::Leaf(ty::<u64>)),
    opt("max_connections", Shape::Leaf(ty::<usize>)),
]);
static PERIOD: Shape = Shape::Table(&[
    opt("years", Shape::Leaf(ty::<u32>)),
    opt("months", Shape::Leaf(ty::<u32>)),
    opt("days", Shape::Leaf(ty::<u32>)),
]);
static RULE: Shape = Shape::Table(&[
    opt("tenants", Shape::Leaf(ty::<Vec<String>>)),
    opt("interaction_types", Shape::Leaf(ty::<Vec<String>>)),
    req("policy", Shape::Leaf(ty::<String>)),
]);
static RETENTION: Shape = Shape::Table(&[
    opt("default_policy", Shape::Leaf(ty::<String>)),
    opt("rules", Shape::List(&RULE)),
    opt("policies", Shape::Map(&PERIOD)),
    opt("notify_command", Shape::Leaf(ty::<Vec<String>>)),
    opt("rewrite_min_days", Shape::Leaf(ty::<u32>)),
]);
/// One section of the file: its structural problems and, when it has none, its value.
fn section<T: serde::de::DeserializeOwned + Default>(
    table: &toml::Table,
    key: &str,
    shape: &Shape,
    problems: &mut Vec<String>,
) -> T {
    let Some(v) = table.get(key) else {
        return T::default();
    };
    let before = problems.len();
    check::walk(shape, v, key, problems);
    if problems.len() > before {
        return T::default();
    }
    v.clone().try_into().unwrap_or_else(|e| {
        problems.push(format!("{key}: {}", e.to_string().trim()));
        T::default()
    })
}

impl Pipeline {
    /// Reads the file's structure: the sections that are well formed, and every structural
    /// problem (unknown or missing keys, wrong types) of the others. A TOML syntax error is
    /// the one problem reported alone (the parser stops there).
    fn parse_sections(
        path: &std::path::Path,
        text: &str,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string().trim().to_string(),
            })?;
        let known = [
            "store",
            "sources",
            "batch",
            "retention",
            "kms",
            "serve",
            "access",
        ];
        let mut problems: Vec<String> = table
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .map(|k| format!("{k}: unknown section (known: {})", known.join(", ")))
            .collect();
        problems.extend(kms::secret_problems(&table));
        let p = Pipeline {
            store: section(&table, "store", &STORE, &mut problems),
            sources: section(&table, "sources", &Shape::List(&SOURCE), &mut problems),
            batch: section(&table, "batch", &BATCH, &mut problems),
            retention: section(&table, "retention", &RETENTION, &mut problems),
            kms: section(&table, "kms", &kms::KMS, &mut problems),
            serve: section(&table, "serve", &SERVE, &mut problems),
            // refused in `validate`, with a pointer to `holdfast access`
            access: table.get("access").cloned(),
        };
        Ok((p, problems))
    }

    /// Parses a pipeline file; every structural problem at once.
    pub fn parse(path: &std::path::Path, text: &str) -> Result<Self, ConfigError> {
        let (p, problems) = Self::parse_sections(path, text)?;
        if problems.is_empty() {
            Ok(p)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }

    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        Self::load_for_store(path, None).map(|(p, _)| p)
    }

    /// Reads and validates a pipeline file for a batch against a store with retention
    /// `floor`: every problem (structure, values, policies, the floor) in one error.
    pub fn load_for_store(
        path: &std::path::Path,
        floor: Option<RetentionFloor>,
    ) -> Result<(Self, Policies), ConfigError> {
        #[allow(clippy::disallowed_methods)] // the caller's pipeline file, not the store
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let (p, mut problems) = Self::parse_sections(path, &text)?;
        match p.validate_with(path, floor) {
            Ok(policies) if problems.is_empty() => return Ok((p, policies)),
            Ok(_) => {}
            Err(ConfigError::Invalid { problems: more, .. }) => problems.extend(more),
            Err(e) => return Err(e),
        }
        Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        })
    }

    /// Every problem at once. No I/O.
    pub fn validate(&self, path: &std::path::Path) -> Result<Policies, ConfigError> {
        self.validate_with(path, None)
    }

    /// As [`Pipeline::validate`], and with a store's `floor`, no policy in use may keep
    /// records for less.
    pub fn validate_with(
        &self,
        path: &std::path::Path,
        floor: Option<RetentionFloor>,
    ) -> Result<Policies, ConfigError> {
        let mut problems = Vec::new();
        if self.access.is_some() {
            problems.push("[access]: roles are no longer read from pipeline files; they live in the store's access policy (see `holdfast access show`, `holdfast access grant`)".into());
        }
        let policies = match self.retention.validate(floor) {
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
        problems.extend(self.batch.problems());
        problems.extend(self.kms.iter().flat_map(KmsConfig::problems));
        if let Some(Err(e)) = self.store.retention_floor_days.map(RetentionFloor::new) {
            problems.push(format!("store.retention_floor_days: {e}"));
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

impl BatchConfig {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.memory_mb < 16 {
            problems.push("batch.memory_mb: at least 16".into());
        }
        if self.memory_mb > 1 << 20 {
            problems.push("batch.memory_mb: at most 1048576 (1 TiB)".into());
        }
        if self.max_input_mb == 0 {
            problems.push("batch.max_input_mb: at least 1".into());
        }
        if self.threads > MAX_THREADS {
            problems.push(format!(
                "batch.threads: {} is more than {MAX_THREADS} (0 = one per core)",
                self.threads
            ));
        }
        if self.max_future_hours > MAX_FUTURE_HOURS {
            problems.push(format!(
                "batch.max_future_hours: at most {MAX_FUTURE_HOURS} (a year)"
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests;
