//! The `[kms]` section: which key service holds the store's KEK. The local keyring is the
//! default; `transit` names an OpenBao/Vault Transit key, `aws-kms` an AWS KMS key. No secret
//! lives here: the token comes only from the environment (`BAO_TOKEN` / `VAULT_TOKEN`, read by
//! `cli`), AWS credentials only from the AWS credential chain.

use super::check::{Shape, opt, ty};
use serde::Deserialize;
use std::collections::BTreeMap;
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
    /// AWS KMS (a symmetric encryption key; `AWS_ENDPOINT_URL` points it elsewhere).
    #[serde(rename = "aws-kms")]
    AwsKms,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsConfig {
    #[serde(default)]
    pub backend: KmsBackend,
    /// The server, `https://host:8200` (else `BAO_ADDR` / `VAULT_ADDR`).
    #[serde(default)]
    pub address: Option<String>,
    /// The Transit key name (a derived key), or the AWS KMS key id, ARN or `alias/…`.
    #[serde(default)]
    pub key: Option<String>,
    /// The AWS region (`aws-kms`; else the key ARN's, else `AWS_REGION` or the profile's).
    #[serde(default)]
    pub region: Option<String>,
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
    /// BYOK: tenants whose records are wrapped under a key of their own (`[kms.tenants.T]`,
    /// the same settings but for `cryptoperiod_days`). Which key protects which tenant is the
    /// store's record (`holdfast keys bind`); a section here only says how to reach it.
    #[serde(default)]
    pub tenants: BTreeMap<String, KmsConfig>,
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
            region: None,
            mount: default_mount(),
            namespace: None,
            ca_file: None,
            cryptoperiod_days: None,
            tenants: BTreeMap::new(),
        }
    }
}

pub(super) static KMS: Shape = Shape::Table(&[
    opt("backend", Shape::Leaf(ty::<KmsBackend>)),
    opt("address", Shape::Leaf(ty::<String>)),
    opt("key", Shape::Leaf(ty::<String>)),
    opt("region", Shape::Leaf(ty::<String>)),
    opt("mount", Shape::Leaf(ty::<String>)),
    opt("namespace", Shape::Leaf(ty::<String>)),
    opt("ca_file", Shape::Leaf(ty::<PathBuf>)),
    opt("cryptoperiod_days", Shape::Leaf(ty::<u32>)),
    opt("tenants", Shape::Map(&TENANT)),
]);

/// `[kms.tenants.T]`: where tenant T's own KEK is.
static TENANT: Shape = Shape::Table(&[
    opt("backend", Shape::Leaf(ty::<KmsBackend>)),
    opt("address", Shape::Leaf(ty::<String>)),
    opt("key", Shape::Leaf(ty::<String>)),
    opt("region", Shape::Leaf(ty::<String>)),
    opt("mount", Shape::Leaf(ty::<String>)),
    opt("namespace", Shape::Leaf(ty::<String>)),
    opt("ca_file", Shape::Leaf(ty::<PathBuf>)),
]);

/// A token written into the file: named on its own, so nobody thinks it was merely misspelt.
pub(super) fn secret_problems(table: &toml::Table) -> Vec<String> {
    let Some(kms) = table.get("kms").and_then(|v| v.as_table()) else {
        return Vec::new();
    };
    let mut problems = secrets_in(kms, "kms");
    if let Some(tenants) = kms.get("tenants").and_then(|v| v.as_table()) {
        for (t, section) in tenants {
            if let Some(section) = section.as_table() {
                problems.extend(secrets_in(section, &format!("kms.tenants.{t}")));
            }
        }
    }
    problems
}

/// Secrets written into one key-service section (`at` names it).
fn secrets_in(kms: &toml::Table, at: &str) -> Vec<String> {
    let transit = ["token", "role_id", "secret_id"]
        .iter()
        .filter(|k| kms.contains_key(**k))
        .map(|k| format!("{at}.{k}: secrets never live in a pipeline file; set BAO_TOKEN or VAULT_TOKEN in the environment (and remove this line)"));
    let aws = ["access_key_id", "secret_access_key", "session_token"]
        .iter()
        .filter(|k| kms.contains_key(**k))
        .map(|k| format!("{at}.{k}: secrets never live in a pipeline file; AWS credentials come from the AWS credential chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, a role); remove this line"));
    transit.chain(aws).collect()
}

impl KmsConfig {
    pub(super) fn problems(&self) -> Vec<String> {
        let mut problems = self.problems_at("kms");
        for (tenant, section) in &self.tenants {
            problems.extend(section.tenant_problems(tenant, self));
        }
        problems
    }

    /// A `[kms.tenants.T]` section: a remote backend with a key of its own, for a tenant id
    /// that can name objects of the store.
    fn tenant_problems(&self, tenant: &str, platform: &KmsConfig) -> Vec<String> {
        let at = format!("kms.tenants.{tenant}");
        let mut problems = Vec::new();
        if !crate::lake::layout::tenant_key_id_ok(tenant) {
            problems.push(format!(
                "{at}: a tenant with its own key needs an id of at most 48 letters, digits, `-`, `_` and `.` (not `.` or `..`)"
            ));
        }
        if self.backend == KmsBackend::Local {
            problems.push(format!(
                "{at}.backend: a tenant's own key lives in a key service: \"transit\" or \"aws-kms\""
            ));
            return problems;
        }
        let same = self.backend == platform.backend
            && self.key == platform.key
            && self.mount == platform.mount
            && self.address == platform.address;
        if same {
            problems.push(format!(
                "{at}.key: the platform key ([kms] key); a tenant's own key is another key"
            ));
        }
        problems.extend(self.problems_at(&at));
        problems
    }

    /// The problems of one section's own settings; `at` names it (`kms`, `kms.tenants.T`).
    fn problems_at(&self, at: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let transit_only = [
            ("address", self.address.is_some()),
            ("namespace", self.namespace.is_some()),
            ("ca_file", self.ca_file.is_some()),
            ("mount", self.mount != default_mount()),
        ];
        let misplaced = |problems: &mut Vec<String>, settings: &[(&str, bool)], why: &str| {
            for (k, set) in settings {
                if *set {
                    problems.push(format!("{at}.{k}: only for {why}"));
                }
            }
        };
        let local_note = "(the local keyring is chosen with --keyring or HOLDFAST_KEYRING)";
        match self.backend {
            KmsBackend::Local => {
                let why = format!("backend = \"transit\" {local_note}");
                misplaced(&mut problems, &transit_only, &why);
                let why = format!("backend = \"transit\" or \"aws-kms\" {local_note}");
                misplaced(&mut problems, &[("key", self.key.is_some())], &why);
                misplaced(
                    &mut problems,
                    &[("region", self.region.is_some())],
                    &format!("backend = \"aws-kms\" {local_note}"),
                );
            }
            KmsBackend::Transit => {
                match self.key.as_deref() {
                    None | Some("") => problems.push(format!(
                        "{at}.key: backend = \"transit\" needs the Transit key name"
                    )),
                    Some(k) if k.contains('/') => problems.push(format!(
                        "{at}.key: `{k}` is not a Transit key name (no `/`)"
                    )),
                    Some(_) => {}
                }
                if self.mount.trim_matches('/').is_empty() {
                    problems.push(format!("{at}.mount: empty"));
                }
                misplaced(
                    &mut problems,
                    &[("region", self.region.is_some())],
                    "backend = \"aws-kms\"",
                );
            }
            KmsBackend::AwsKms => {
                problems.extend(self.aws_problems(at));
                misplaced(&mut problems, &transit_only, "backend = \"transit\"");
            }
        }
        if let Some(d) = self.cryptoperiod_days
            && !(1..=3650).contains(&d)
        {
            problems.push(format!(
                "{at}.cryptoperiod_days: {d} is not between 1 and 3650 (NIST SP 800-57 suggests up to about 730)"
            ));
        }
        problems
    }

    /// `aws-kms`: a key that names one, and a region that agrees with the key's ARN.
    fn aws_problems(&self, at: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let key = self.key.as_deref().unwrap_or_default();
        if key.is_empty() {
            problems.push(format!(
                "{at}.key: backend = \"aws-kms\" needs the KMS key (a key id, key ARN or alias/NAME)"
            ));
        } else if let Err(e) = crate::crypto::kms::aws::check_key_name(key) {
            problems.push(format!("{at}.key: {e}"));
        }
        if let Some(r) = self.region.as_deref() {
            if !crate::crypto::kms::aws::region_like(r) {
                problems.push(format!("{at}.region: `{r}` is not an AWS region name"));
            } else if let Some(arn_region) = crate::crypto::kms::aws::arn_region(key)
                && arn_region != r
            {
                problems.push(format!(
                    "{at}.region: `{r}`, but the key ARN is in `{arn_region}`; remove `region` or make them agree"
                ));
            }
        }
        problems
    }
}
