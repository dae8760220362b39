//! `keys status`: the KEK's versions as the backend reports them, each one's age against the
//! cryptoperiod, and how many DEKs each version wraps, by home.

use super::inventory::{self, Inventory};
use crate::crypto::kms::{KekInfo, Kms};
use crate::error::Result;
use crate::storage::Store;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// One KEK version.
#[derive(Debug, Clone, Serialize)]
pub struct VersionStatus {
    pub version: u32,
    pub created_at: Option<DateTime<Utc>>,
    pub age_days: Option<i64>,
    /// New DEKs are wrapped under it.
    pub primary: bool,
    /// The backend still unwraps under it (not retired).
    pub decrypts: bool,
    /// DEKs it wraps now, by home (`data_files`, `landing`, `failed`, `quarantine`,
    /// `index_secret`).
    pub deks: BTreeMap<&'static str, u64>,
    pub total: u64,
}

/// What `keys status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct KeyStatus {
    pub kek_id: String,
    pub backend: String,
    pub primary: u32,
    pub min_decryption_version: u32,
    pub cryptoperiod_days: u32,
    pub versions: Vec<VersionStatus>,
    /// DEKs wrapped under another KEK than the store's (none in a healthy store), by KEK id.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub other_keks: BTreeMap<String, u64>,
    pub warnings: Vec<String>,
}

/// The warning a KEK whose primary version is past its cryptoperiod at `now` gets.
pub fn cryptoperiod_warning(info: &KekInfo, now: DateTime<Utc>, days: u32) -> Option<String> {
    let made = info.primary_created_at()?;
    let age = (now - made).num_days();
    (age > i64::from(days)).then(|| {
        format!(
            "KEK {} v{} is {age} days old, past its cryptoperiod of {days} days: run `holdfast keys rotate`, then `holdfast keys rewrap`",
            info.kek_id, info.primary
        )
    })
}

/// The status of the store's KEK at `now`.
pub async fn status(
    store: &Store,
    kms: &dyn Kms,
    now: DateTime<Utc>,
    cryptoperiod_days: u32,
) -> Result<KeyStatus> {
    let info = kms.info().await?;
    let inv = inventory::take(store).await?;
    Ok(report(&info, &inv, now, cryptoperiod_days))
}

fn report(info: &KekInfo, inv: &Inventory, now: DateTime<Utc>, days: u32) -> KeyStatus {
    let mut versions: BTreeMap<u32, VersionStatus> = info
        .versions
        .iter()
        .map(|v| {
            let s = VersionStatus {
                version: v.version,
                created_at: v.created_at,
                age_days: v.created_at.map(|t| (now - t).num_days()),
                primary: v.version == info.primary,
                decrypts: v.version >= info.min_decryption_version,
                deks: BTreeMap::new(),
                total: 0,
            };
            (v.version, s)
        })
        .collect();
    let mut other_keks = BTreeMap::new();
    let mut unknown: BTreeMap<u32, u64> = BTreeMap::new();
    for k in &inv.keys {
        let w = &k.current;
        if w.kek_id != info.kek_id {
            *other_keks.entry(w.kek_id.clone()).or_default() += 1;
            continue;
        }
        match versions.get_mut(&w.kek_version) {
            Some(v) => {
                *v.deks.entry(k.home.place()).or_default() += 1;
                v.total += 1;
            }
            None => *unknown.entry(w.kek_version).or_default() += 1,
        }
    }
    let mut warnings: Vec<String> = cryptoperiod_warning(info, now, days).into_iter().collect();
    for v in versions.values().filter(|v| v.total > 0) {
        if !v.decrypts {
            warnings.push(format!(
                "{} DEK(s) are wrapped under v{}, which the backend no longer decrypts (retired): their records cannot be read until it is re-enabled",
                v.total, v.version
            ));
        } else if !v.primary {
            warnings.push(format!(
                "{} DEK(s) are still wrapped under v{} (primary is v{}): run `holdfast keys rewrap` before retiring it",
                v.total, v.version, info.primary
            ));
        }
    }
    for (version, n) in unknown {
        warnings.push(format!(
            "{n} DEK(s) name v{version}, a version the backend does not list"
        ));
    }
    for (kek, n) in &other_keks {
        warnings.push(format!(
            "{n} DEK(s) are wrapped under KEK {kek}, not the store's {}",
            info.kek_id
        ));
    }
    KeyStatus {
        kek_id: info.kek_id.clone(),
        backend: info.backend.clone(),
        primary: info.primary,
        min_decryption_version: info.min_decryption_version,
        cryptoperiod_days: days,
        versions: versions.into_values().collect(),
        other_keks,
        warnings,
    }
}

impl std::fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "KEK {} ({})", self.kek_id, self.backend)?;
        writeln!(
            f,
            "cryptoperiod {} days; primary v{}; decrypts from v{}",
            self.cryptoperiod_days, self.primary, self.min_decryption_version
        )?;
        writeln!(
            f,
            "{:>7}  {:<20}  {:>8}  {:>10}  {:>7}  {:>6}  {:>10}  {:>5}  {:>7}",
            "version",
            "created",
            "age_days",
            "data_files",
            "landing",
            "failed",
            "quarantine",
            "index",
            "total"
        )?;
        for v in &self.versions {
            let n = |k: &str| v.deks.get(k).copied().unwrap_or(0);
            let mark = match (v.primary, v.decrypts) {
                (true, _) => "*",
                (false, false) => "x",
                _ => " ",
            };
            writeln!(
                f,
                "{:>6}{mark}  {:<20}  {:>8}  {:>10}  {:>7}  {:>6}  {:>10}  {:>5}  {:>7}",
                format!("v{}", v.version),
                v.created_at.map_or("-".into(), crate::clock::fmt_ts),
                v.age_days.map_or("-".into(), |d| d.to_string()),
                n("data_files"),
                n("landing"),
                n("failed"),
                n("quarantine"),
                n("index_secret"),
                v.total
            )?;
        }
        writeln!(f, "(* primary, x retired)")?;
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}
