//! Every wrapped DEK a store holds, and where: data files (their latest manifest, the
//! authoritative home; the copy in a file's footer is informational and never counted),
//! landing and failed segments, quarantine entries, and the blind-index secret. Keys of
//! objects never rewritten are counted under their newest wrapping ([`super::overlay`]).

use super::overlay::Newer;
use crate::crypto::kms::WrappedKey;
use crate::error::Result;
use crate::lake::layout::{self, FailedSegmentPath, IndexSecretPath, Partition};
use crate::lake::manifest::{self, Loaded};
use crate::storage::Store;
use serde::Serialize;
use std::collections::BTreeMap;

/// Where a wrapped DEK lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Home {
    /// A committed data file (the partition's latest manifest lists it).
    DataFile { partition: Partition, path: String },
    /// A landing segment waiting for a batch.
    Landing { segment_id: String },
    /// A segment a batch moved aside.
    Failed { path: String },
    /// Quarantine entries (one DEK seals a batch's entries).
    Quarantine { entries: u64 },
    /// The store's blind-index secret (stores whose KEK is in a remote KMS).
    IndexSecret,
    /// A tenant's blind-index secret, under its own key (BYOK).
    TenantIndexSecret { tenant: String },
}

impl Home {
    /// The name `keys status` counts it under.
    pub fn place(&self) -> &'static str {
        match self {
            Home::DataFile { .. } => "data_files",
            Home::Landing { .. } => "landing",
            Home::Failed { .. } => "failed",
            Home::Quarantine { .. } => "quarantine",
            Home::IndexSecret | Home::TenantIndexSecret { .. } => "index_secret",
        }
    }
}

/// One wrapped DEK: as its home records it, and as it is used now.
#[derive(Debug, Clone)]
pub struct Held {
    pub dek_id: String,
    pub home: Home,
    /// What the home object records.
    pub stored: WrappedKey,
    /// The wrapping in use: a newer stored one for homes never rewritten, else `stored`.
    pub current: WrappedKey,
}

/// What [`take`] found.
#[derive(Debug)]
pub struct Inventory {
    pub keys: Vec<Held>,
    /// The latest manifest of every partition, as read.
    pub latest: BTreeMap<Partition, Loaded>,
    pub newer: Newer,
}

impl Inventory {
    /// Whether any committed data file holds records of `tenant`.
    pub fn has_records_of(&self, tenant: &str) -> bool {
        self.latest.values().any(|l| {
            l.manifest
                .files
                .iter()
                .any(|f| f.tenant_ids.iter().any(|t| t == tenant))
        })
    }
}

/// Reads the inventory: one manifest listing and the latest versions, one listing each of
/// landing, failed, quarantine and the rewrapped keys, and each segment's header.
pub async fn take(store: &Store) -> Result<Inventory> {
    let newer = Newer::load(store).await?;
    let mut keys = Vec::new();
    let latest: BTreeMap<Partition, Loaded> = manifest::load_latest_all(store)
        .await?
        .into_iter()
        .map(|l| (l.manifest.partition.clone(), l))
        .collect();
    for l in latest.values() {
        for f in &l.manifest.files {
            let e = &f.encryption;
            keys.push(Held {
                dek_id: e.dek_id.clone(),
                home: Home::DataFile {
                    partition: l.manifest.partition.clone(),
                    path: f.path.clone(),
                },
                stored: e.wrapped_dek.clone(),
                current: e.wrapped_dek.clone(),
            });
        }
    }
    let mut overlaid = |dek_id: String, home: Home, stored: WrappedKey| {
        let current = newer.effective(&dek_id, &stored).clone();
        keys.push(Held {
            dek_id,
            home,
            stored,
            current,
        });
    };
    for (path, _) in segments(store, layout::LANDING).await? {
        for h in crate::landing::read_headers(store, &path).await? {
            let home = Home::Landing {
                segment_id: h.segment_id,
            };
            overlaid(h.dek_id, home, h.wrapped_dek);
        }
    }
    for (path, _) in segments(store, layout::FAILED).await? {
        for h in crate::landing::read_headers(store, &path).await? {
            let home = Home::Failed {
                path: path.to_string(),
            };
            overlaid(h.dek_id, home, h.wrapped_dek);
        }
    }
    let mut sealed: BTreeMap<String, (u64, WrappedKey)> = BTreeMap::new();
    for e in crate::landing::quarantine::list(store).await? {
        sealed.entry(e.dek_id).or_insert((0, e.wrapped_dek)).0 += 1;
    }
    for (dek_id, (entries, stored)) in sealed {
        overlaid(dek_id, Home::Quarantine { entries }, stored);
    }
    if let Some(s) = crate::store::index_secret(store).await? {
        overlaid(s.secret_id, Home::IndexSecret, s.wrapped);
    }
    for tenant in super::tenants::bindings(store).await?.into_keys() {
        if let Some(s) = super::tenants::index_secret(store, &tenant).await? {
            overlaid(s.secret_id, Home::TenantIndexSecret { tenant }, s.wrapped);
        }
    }
    Ok(Inventory {
        keys,
        latest,
        newer,
    })
}

/// The segments under `prefix` (landing or failed), with their ids.
async fn segments(store: &Store, prefix: &str) -> Result<Vec<(object_store::path::Path, String)>> {
    let mut out = Vec::new();
    for meta in store.list(prefix).await? {
        let id = if prefix == layout::FAILED {
            FailedSegmentPath::parse(&meta.location).map(|f| f.segment_id().to_string())
        } else {
            layout::parse_landing_segment(&meta.location)
        };
        if let Some(id) = id {
            out.push((meta.location, id));
        }
    }
    Ok(out)
}

/// The index secret's path, for messages.
pub fn index_secret_path() -> String {
    IndexSecretPath::new(1).to_path().to_string()
}
