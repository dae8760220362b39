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
    /// DEKs wrapped under a KEK that is neither the store's nor a bound tenant's (none in a
    /// healthy store), by KEK id.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub other_keks: BTreeMap<String, u64>,
    pub warnings: Vec<String>,
    /// The tenant whose own key this is (BYOK); `None`: the store's platform key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Why the key service did not answer (its tenant's records cannot be read, its new
    /// events wait in landing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// DEKs wrapped under this KEK when its versions cannot be listed (it is unavailable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deks_unlisted: Option<u64>,
    /// Every tenant's own key (BYOK), each with its own status.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<KeyStatus>,
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
    let domains = kms.tenants();
    let earlier = super::platform::keks(store).await?.previous;
    let known: Vec<&str> = std::iter::once(kms.kek_id())
        .chain(domains.iter().map(|(_, k)| k.kek_id()))
        .chain(earlier.iter().map(String::as_str))
        .collect();
    let mut out = report(&info, &inv, now, cryptoperiod_days, &known);
    for kek in &earlier {
        let n = inv.keys.iter().filter(|k| &k.current.kek_id == kek).count();
        if n > 0 {
            out.warnings.push(format!(
                "{n} DEK(s) are still wrapped under the store's earlier platform key {kek}: run `holdfast keys rewrap` to move them to {}",
                info.kek_id
            ));
        }
    }
    for (tenant, k) in &domains {
        let mut t = match k.info().await {
            Ok(info) => report(&info, &inv, now, cryptoperiod_days, &known),
            Err(e) => unavailable(k.kek_id(), &k.describe(), e.to_string(), &inv),
        };
        t.warnings = t
            .warnings
            .into_iter()
            .map(|w| format!("tenant {tenant}: {w}"))
            .collect();
        t.tenant = Some(tenant.clone());
        out.warnings.extend(t.warnings.iter().cloned());
        out.tenants.push(t);
    }
    Ok(out)
}

/// A tenant's own key whose service does not answer: what it wraps, and the warning.
fn unavailable(kek_id: &str, backend: &str, reason: String, inv: &Inventory) -> KeyStatus {
    let mine: Vec<_> = inv
        .keys
        .iter()
        .filter(|k| k.current.kek_id == kek_id)
        .collect();
    let landing = mine.iter().filter(|k| k.home.place() == "landing").count();
    let warning = format!(
        "its own key {kek_id} is unavailable ({reason}): its {} DEK(s) cannot be unwrapped, so its records cannot be read, and its new events wait in landing ({landing} segment(s) sealed under its key)",
        mine.len()
    );
    KeyStatus {
        kek_id: kek_id.to_string(),
        backend: backend.to_string(),
        primary: 0,
        min_decryption_version: 0,
        cryptoperiod_days: 0,
        versions: Vec::new(),
        other_keks: BTreeMap::new(),
        warnings: vec![warning],
        tenant: None,
        unavailable: Some(reason),
        deks_unlisted: Some(mine.len() as u64),
        tenants: Vec::new(),
    }
}

fn report(
    info: &KekInfo,
    inv: &Inventory,
    now: DateTime<Utc>,
    days: u32,
    known: &[&str],
) -> KeyStatus {
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
            if !known.contains(&w.kek_id.as_str()) {
                *other_keks.entry(w.kek_id.clone()).or_default() += 1;
            }
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
            "{n} DEK(s) are wrapped under KEK {kek}, neither the store's {} nor a bound tenant's",
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
        tenant: None,
        unavailable: None,
        deks_unlisted: None,
        tenants: Vec::new(),
    }
}

impl std::fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.table(f)?;
        for t in &self.tenants {
            writeln!(f)?;
            t.table(f)?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

impl KeyStatus {
    /// This KEK's table (its tenant's, when it is a tenant's own).
    fn table(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(t) = &self.tenant {
            write!(f, "tenant {t}: ")?;
        }
        writeln!(f, "KEK {} ({})", self.kek_id, self.backend)?;
        if let Some(why) = &self.unavailable {
            let n = self.deks_unlisted.unwrap_or(0);
            return writeln!(f, "UNAVAILABLE: {why}; {n} DEK(s) wrapped under it");
        }
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
        writeln!(f, "(* primary, x retired)")
    }
}
