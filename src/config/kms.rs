//! The `[kms]` section: which key service holds the store's KEK. The local keyring is the
//! default; `transit` names an OpenBao/Vault Transit key. No secret lives here: the token
//! comes only from the environment (`BAO_TOKEN` / `VAULT_TOKEN`, read by `cli`).

use super::check::{Shape, opt, ty};
use serde::Deserialize;
use std::path::PathBuf;

/// The key services a pipeline may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KmsBackend {
    /// The local keyring file (`--keyring`, `HOLDFAST_KEYRING` or the default location).
    #[default]
    Local,
    /// OpenBao / HashiCorp Vault Transit.
    Transit,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsConfig {
    #[serde(default)]
    pub backend: KmsBackend,
    /// The server, `https://host:8200` (else `BAO_ADDR` / `VAULT_ADDR`).
    #[serde(default)]
    pub address: Option<String>,
    /// The Transit key name (a derived key).
    #[serde(default)]
    pub key: Option<String>,
    /// The Transit mount path.
    #[serde(default = "default_mount")]
    pub mount: String,
    /// OpenBao / Vault Enterprise namespace (else `BAO_NAMESPACE` / `VAULT_NAMESPACE`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// PEM file of the CA of the server's certificate (else `BAO_CACERT` / `VAULT_CACERT`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How long a KEK version is meant to be used (NIST SP 800-57: up to about 2 years).
    /// Checked here; the age checks come with the key lifecycle commands.
    #[serde(default)]
    pub cryptoperiod_days: Option<u32>,
}

fn default_mount() -> String {
    "transit".into()
}

impl Default for KmsConfig {
    fn default() -> Self {
        KmsConfig {
            backend: KmsBackend::Local,
            address: None,
            key: None,
            mount: default_mount(),
            namespace: None,
            ca_file: None,
            cryptoperiod_days: None,
        }
    }
}

pub(super) static KMS: Shape = Shape::Table(&[
    opt("backend", Shape::Leaf(ty::<KmsBackend>)),
    opt("address", Shape::Leaf(ty::<String>)),
    opt("key", Shape::Leaf(ty::<String>)),
    opt("mount", Shape::Leaf(ty::<String>)),
    opt("namespace", Shape::Leaf(ty::<String>)),
    opt("ca_file", Shape::Leaf(ty::<PathBuf>)),
    opt("cryptoperiod_days", Shape::Leaf(ty::<u32>)),
]);

/// A token written into the file: named on its own, so nobody thinks it was merely misspelt.
pub(super) fn secret_problems(table: &toml::Table) -> Vec<String> {
    let Some(kms) = table.get("kms").and_then(|v| v.as_table()) else {
        return Vec::new();
    };
    ["token", "role_id", "secret_id"]
        .iter()
        .filter(|k| kms.contains_key(**k))
        .map(|k| format!("kms.{k}: secrets never live in a pipeline file; set BAO_TOKEN or VAULT_TOKEN in the environment (and remove this line)"))
        .collect()
}

impl KmsConfig {
    pub(super) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let transit_only = [
            ("address", self.address.is_some()),
            ("key", self.key.is_some()),
            ("namespace", self.namespace.is_some()),
            ("ca_file", self.ca_file.is_some()),
            ("mount", self.mount != default_mount()),
        ];
        match self.backend {
            KmsBackend::Local => {
                for (k, set) in transit_only {
                    if set {
                        problems.push(format!(
                            "kms.{k}: only for backend = \"transit\" (the local keyring is chosen with --keyring or HOLDFAST_KEYRING)"
                        ));
                    }
                }
            }
            KmsBackend::Transit => {
                match self.key.as_deref() {
                    None | Some("") => problems
                        .push("kms.key: backend = \"transit\" needs the Transit key name".into()),
                    Some(k) if k.contains('/') => {
                        problems.push(format!("kms.key: `{k}` is not a Transit key name (no `/`)"))
                    }
                    Some(_) => {}
                }
                if self.mount.trim_matches('/').is_empty() {
                    problems.push("kms.mount: empty".into());
                }
            }
        }
        if let Some(d) = self.cryptoperiod_days
            && !(1..=3650).contains(&d)
        {
            problems.push(format!(
                "kms.cryptoperiod_days: {d} is not between 1 and 3650 (NIST SP 800-57 suggests up to about 730)"
            ));
        }
        problems
    }
}
