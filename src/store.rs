//! A holdfast store as a whole: its marker (`holdfast.json`: format, the KEK it is bound to,
//! the retention floor, file modes), creating one ([`init`]) and opening one with the keyring
//! that belongs to it ([`open`]). The entry points every command and the server start from;
//! where the keyring lives by default (the environment) is the caller's business.

use crate::clock::Clock;
use crate::config::{Pipeline, Policies, RetentionFloor};
use crate::crypto::kms::Kms;
use crate::crypto::kms::aws::AwsKmsConfig;
use crate::crypto::kms::transit::TransitConfig;
use crate::error::{Error, Result};
use crate::lake::layout;
use crate::storage::{Put, Store, StoreUrl};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod keys;
pub(crate) use keys::index_secret;
pub use keys::{Keys, TenantKeys, open_tenant_key};

/// The store marker (its disk format is `crate::storage::marker`).
pub use crate::storage::marker::Marker as StoreMarker;

/// The Object Lock mode an S3 store records (COMPLIANCE unless asked otherwise); none for a
/// store without Object Lock, where asking for one is a usage error.
fn lock_mode(req: &InitRequest<'_>) -> Result<Option<String>> {
    use crate::storage::marker::LOCK_MODES;
    let asked = req.object_lock_mode.map(str::to_ascii_uppercase);
    match (req.store.is_remote(), asked) {
        (true, None) => Ok(Some(LOCK_MODES[0].to_string())),
        (true, Some(m)) if LOCK_MODES.contains(&m.as_str()) => Ok(Some(m)),
        (true, Some(m)) => Err(Error::Usage(format!(
            "--object-lock-mode {m}: one of compliance, governance"
        ))),
        (false, None) => Ok(None),
        (false, Some(_)) => Err(Error::Usage(
            "--object-lock-mode is for s3:// stores (a local store's locks are holdfast's own)"
                .into(),
        )),
    }
}

/// The store's retention floor, as its marker records it.
fn floor_of(m: &StoreMarker) -> RetentionFloor {
    RetentionFloor {
        days: m.retention_floor_days,
    }
}

/// What [`init`] creates or checks.
#[derive(Debug, Clone)]
pub struct InitRequest<'a> {
    /// Where the store is (a directory, `file://` or `memory://` URL).
    pub store: &'a StoreUrl,
    /// The local keyring file (created when missing; never inside the store).
    pub keyring: &'a Path,
    /// When set, the store's KEK is this Transit key instead (it must exist and be derived);
    /// `keyring` is then not used.
    pub transit: Option<&'a TransitConfig>,
    /// When set, the store's KEK is this AWS KMS key instead (an enabled symmetric key), and
    /// `keyring` (created when missing) only signs the store's heads.
    pub aws_kms: Option<&'a AwsKmsConfig>,
    /// The store's minimum retention in days; `None`: the default (set once, never lowered).
    pub retention_floor_days: Option<u32>,
    /// Objects 0640 and directories 0750 instead of 0600/0700 (chosen once).
    pub group_readable: bool,
    /// An S3 store's bucket is created (versioned, with Object Lock) when it is missing.
    pub create_bucket: bool,
    /// An S3 store's Object Lock mode (`COMPLIANCE`, the default, or `GOVERNANCE`); refused
    /// for other stores.
    pub object_lock_mode: Option<&'a str>,
    /// The OS user running init: the first access policy names them sole administrator.
    pub admin: &'a str,
}

/// What [`init`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Initialised {
    /// The store, as messages name it.
    pub store: String,
    /// The key service, as messages name it (`local keyring …`, `OpenBao/Vault Transit …`).
    pub kms: String,
    pub kek_id: String,
    /// The keyring was created now.
    pub new_keyring: bool,
    /// The store was created now (`false`: it existed and matches the request).
    pub created: bool,
    pub retention_floor_days: u32,
    /// The first access policy was recorded now (naming [`InitRequest::admin`]).
    pub policy_recorded: bool,
}

/// Creates the store (or checks an existing one against the keyring) and records its first
/// access policy if it has none: `req.admin` administers it alone. The signed head chain
/// starts here.
pub async fn init(req: &InitRequest<'_>, clock: Arc<dyn Clock>) -> Result<Initialised> {
    let floor = match req.retention_floor_days {
        Some(d) => RetentionFloor::new(d).map_err(Error::Usage)?,
        None => RetentionFloor::default(),
    };
    let now = crate::clock::fmt_ts(clock.now());
    let remote = match (req.transit, req.aws_kms) {
        (Some(_), Some(_)) => {
            return Err(Error::Usage(
                "a store's KEK is in one key service: Transit or AWS KMS, not both".into(),
            ));
        }
        (Some(t), None) => keys::Remote::Transit(t),
        (None, Some(a)) => keys::Remote::AwsKms(a),
        (None, None) => keys::Remote::None,
    };
    let (kms, new_keyring) = keys::for_init(req.keyring, remote, req.store, &clock).await?;
    let ring = kms.as_ref();
    if req.create_bucket {
        // an S3 bucket made (versioned, Object Lock on) before anything looks for the store
        Store::init(req.store, req.group_readable, true)?;
    }
    if let Some(store) = initialised(req.store).await? {
        let existing = read_marker(&store).await?;
        if existing.group_readable != req.group_readable {
            return Err(Error::conflict(
                format!(
                    "store {} is already initialised {}; file modes are chosen once, at init",
                    store.describe(),
                    if existing.group_readable {
                        "group-readable"
                    } else {
                        "owner-only"
                    }
                ),
                false,
            ));
        }
    }
    let store = Store::init(req.store, req.group_readable, req.create_bucket)?;
    let created = write_marker(&store, req, ring, floor, now.clone()).await?;
    if req.transit.is_some() || req.aws_kms.is_some() {
        keys::ensure_index_secret(&store, ring, now).await?;
    }
    let policy_recorded = crate::access::admin::record_first(&store, clock.clone(), req.admin)
        .await?
        .is_some();
    // the signed head chain starts here, naming the first policy and the audit trail
    if crate::head::newest(&store).await?.is_none() {
        let audit = crate::audit::Audit::new(store.clone(), clock.clone());
        let c = crate::head::Committer {
            store: &store,
            kms: ring,
            audit: &audit,
        };
        crate::head::commit(c, &crate::head::Change::new("init"), clock.now()).await?;
    }
    Ok(Initialised {
        store: store.describe(),
        kms: ring.describe(),
        kek_id: ring.kek_id().to_string(),
        new_keyring,
        created,
        retention_floor_days: floor.days,
        policy_recorded,
    })
}

/// Writes the marker create-only; whether it was created (an existing one must name the same
/// KEK and, when the request names one, the same floor).
async fn write_marker(
    store: &Store,
    req: &InitRequest<'_>,
    ring: &dyn Kms,
    floor: RetentionFloor,
    now: String,
) -> Result<bool> {
    let mode = lock_mode(req)?;
    let marker = StoreMarker {
        created_at: now,
        kek_id: ring.kek_id().to_string(),
        retention_floor_days: floor.days,
        group_readable: req.group_readable,
        object_lock_mode: mode.clone(),
    };
    let path = layout::store_marker();
    let bytes = crate::storage::marker::encode(&marker);
    if store.put_new(&path, bytes).await? == Put::Created {
        return Ok(true);
    }
    let existing = read_marker(store).await?;
    if existing.kek_id != ring.kek_id() {
        return Err(Error::conflict(
            format!(
                "store {} is bound to KEK {}, but {} holds {}",
                store.describe(),
                existing.kek_id,
                ring.describe(),
                ring.kek_id()
            ),
            false,
        ));
    }
    if req.object_lock_mode.is_some() && existing.object_lock_mode != mode {
        return Err(Error::conflict(
            format!(
                "store {} retains data files in Object Lock mode {}; it is chosen once, at init",
                store.describe(),
                existing.object_lock_mode.as_deref().unwrap_or("COMPLIANCE")
            ),
            false,
        ));
    }
    let recorded = existing.retention_floor_days;
    if req.retention_floor_days.is_some_and(|d| d != recorded) {
        return Err(Error::conflict(
            format!(
                "store {} has a retention floor of {recorded} days; it is set once, at init, and never changed",
                store.describe()
            ),
            false,
        ));
    }
    Ok(false)
}

/// The store's retention floor, as its marker records it.
pub async fn retention_floor(store: &Store) -> Result<RetentionFloor> {
    Ok(floor_of(&read_marker(store).await?))
}

/// The store at `url` if it exists and holds a store marker.
pub async fn initialised(url: &StoreUrl) -> Result<Option<Store>> {
    let store = match Store::open(url, false) {
        Ok(store) => store,
        Err(e) if url.is_remote() => return Err(e.into()),
        Err(_) => return Ok(None),
    };
    let marker = layout::store_marker();
    Ok(store.get_opt(&marker).await?.map(|_| store))
}

/// `--store` naming nothing is a usage error (2); a store that exists but holds no store
/// marker is a runtime failure (1).
fn not_a_store(store: &str, exists: bool) -> Error {
    let what =
        format!("{store} is not a holdfast store; run `holdfast init --store {store}` first");
    if exists {
        Error::Unusable(what)
    } else {
        Error::Usage(what)
    }
}

/// The store's marker; a store without one is not a holdfast store.
pub async fn read_marker(store: &Store) -> Result<StoreMarker> {
    let path = layout::store_marker();
    let bytes = store
        .get_opt(&path)
        .await?
        .ok_or_else(|| not_a_store(&store.describe(), true))?;
    crate::storage::marker::decode(&bytes).map_err(|e| {
        Error::Unusable(format!(
            "{}: unreadable store marker: {e}",
            store.describe()
        ))
    })
}

/// Opens an initialised store without its keyring (commands that need no key).
pub async fn open_unkeyed(url: &StoreUrl) -> Result<Store> {
    let store = match Store::open(url, false) {
        Ok(store) => store,
        Err(e) if url.is_remote() => return Err(e.into()),
        Err(_) => return Err(not_a_store(&url.to_string(), false)),
    };
    read_marker(&store).await?;
    Ok(store)
}

/// Opens an initialised store and its keyring, checking that they belong together (and that
/// the keyring is not kept inside the store).
pub async fn open(url: &StoreUrl, keyring: &Path) -> Result<(Store, Arc<dyn Kms>)> {
    open_keys(url, Keys::Local(keyring), &Default::default()).await
}

/// Opens an initialised store with the key service `keys` names, checking that it holds the
/// KEK the store is bound to, and the own key service of every tenant the store binds to one
/// (BYOK), reached as `tenants` says ([`TenantKeys`]).
pub async fn open_keys(
    url: &StoreUrl,
    keys: Keys<'_>,
    tenants: &std::collections::BTreeMap<String, TenantKeys>,
) -> Result<(Store, Arc<dyn Kms>)> {
    let store = match Store::open(url, false) {
        Ok(store) => store,
        Err(e) if url.is_remote() => return Err(e.into()),
        Err(_) => {
            let exists = url.local_dir().is_some_and(|d| d.exists());
            return Err(not_a_store(&url.to_string(), exists));
        }
    };
    // the platform KEK in force: the marker's, or the newest `keys migrate` approved
    let keks = crate::keys::platform::keks(&store).await?;
    let newer = crate::keys::Newer::load(&store).await?;
    let kms = keys::open_kms(&store, url, &keks.current, keys, &newer).await?;
    // backend calls are counted below the cache: the audit counts what reached the backend
    let kms = crate::crypto::kms::Caching::wrap(crate::crypto::kms::Counting::wrap(kms));
    let previous = keys::open_previous(keys, &keks.previous).await;
    let own = keys::open_tenants(&store, tenants, &newer).await?;
    let kms = crate::crypto::kms::Tenanted::wrap(kms, previous, own);
    // mid-migration, the index secret is still under an earlier platform key
    let kms = match keys::index_secret(&store).await? {
        Some(mut s) if !keks.previous.is_empty() => {
            s.wrapped = newer.effective(&s.secret_id, &s.wrapped).clone();
            if s.wrapped.kek_id == keks.current {
                kms
            } else {
                crate::crypto::kms::IndexFrom::wrap(kms, s)
            }
        }
        _ => kms,
    };
    Ok((store, crate::keys::Overlaid::wrap(kms, newer)))
}

/// Refuses a keyring inside the store: keys stay apart from the data they protect.
pub fn keyring_apart(keyring: &Path, store: &StoreUrl) -> Result<()> {
    let inside = store
        .local_dir()
        .is_some_and(|dir| absolute(keyring).starts_with(absolute(dir)));
    if inside {
        return Err(Error::Usage(format!(
            "the keyring {} is inside the store {}; keep keys apart from the data they protect",
            keyring.display(),
            store
        )));
    }
    Ok(())
}

/// Absolute path without requiring it to exist (for the keyring-inside-store check).
fn absolute(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    // resolve the deepest existing ancestor so that symlinks cannot hide containment
    let mut existing = abs.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(|f| f.to_os_string()),
            existing.parent(),
        ) {
            (Some(f), Some(parent)) => {
                rest.push(f);
                existing = parent.to_path_buf();
            }
            _ => return abs,
        }
    }
    let mut out = existing.canonicalize().unwrap_or(existing);
    for f in rest.into_iter().rev() {
        out.push(f);
    }
    out
}

/// The pipeline file (if any) and its policy table, checked against the store's retention
/// floor: every problem in one error.
pub async fn policies_for(
    store: &Store,
    pipeline: Option<&Path>,
) -> Result<(Option<Pipeline>, Policies)> {
    let floor = Some(retention_floor(store).await?);
    Ok(match pipeline {
        Some(path) => {
            let (p, policies) = Pipeline::load_for_store(path, floor)?;
            (Some(p), policies)
        }
        None => {
            let defaults = Path::new("the default retention policies");
            (None, Pipeline::default().validate_with(defaults, floor)?)
        }
    })
}

/// Test support: a store `alice` initialised (sole administrator) in `dir`, opened with its
/// keyring, on `clock`.
#[cfg(test)]
pub(crate) async fn initialised_for_tests(
    dir: &Path,
    clock: Arc<dyn Clock>,
) -> (Store, Arc<dyn Kms>) {
    let (url, keyring) = (StoreUrl::local(dir.join("store")), dir.join("keyring.json"));
    let req = InitRequest {
        store: &url,
        keyring: &keyring,
        transit: None,
        aws_kms: None,
        retention_floor_days: None,
        group_readable: false,
        create_bucket: false,
        object_lock_mode: None,
        admin: "alice",
    };
    init(&req, clock).await.expect("init");
    open(&url, &keyring).await.expect("open")
}

#[cfg(test)]
mod tests;
