//! The store and keyring a command opens: `init`, the store marker, the keyring path rule.

use super::*;

#[derive(Debug, clap::Args, Clone)]
pub struct StoreArgs {
    /// Store directory
    #[arg(long, env = "HOLDFAST_STORE")]
    pub store: PathBuf,
    /// Local keyring file (default: $XDG_CONFIG_HOME/holdfast/keyring.json; never inside a store)
    #[arg(long, env = "HOLDFAST_KEYRING")]
    pub keyring: Option<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StoreMarker {
    format: String,
    version: u32,
    created_at: String,
    kek_id: String,
    /// The store's minimum retention, set once here (see [`crate::config::RetentionFloor`]);
    /// a marker without it (older stores) has the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retention_floor_days: Option<u32>,
    /// Objects 0640 and directories 0750 (the store's group may read), instead of 0600/0700.
    /// Set by `init --group-readable`; never from the environment.
    #[serde(default)]
    group_readable: bool,
}

/// `init`'s arguments.
#[derive(Debug, clap::Args, Clone)]
pub struct InitArgs {
    #[command(flatten)]
    pub s: StoreArgs,
    /// The store's minimum retention in days: no pipeline may keep a record for less, and
    /// events older than it on arrival are quarantined. Set once, never lowered
    /// [default: 2190, FINRA 4511's 6 years]
    #[arg(long)]
    pub retention_floor_days: Option<u32>,
    /// Let the store's group read it: objects 0640 and directories 0750 instead of
    /// 0600/0700 (recorded in the store marker)
    #[arg(long)]
    pub group_readable: bool,
}

pub(super) fn default_keyring() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(
            std::env::var_os("HOME")
                .ok_or_else(|| Error::Usage("set HOME, XDG_CONFIG_HOME or --keyring".into()))?,
        )
        .join(".config"),
    };
    Ok(base.join("holdfast").join("keyring.json"))
}

/// Absolute path without requiring it to exist (for the keyring-inside-store check).
pub(super) fn absolute(p: &Path) -> PathBuf {
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

pub(super) fn keyring_path(s: &StoreArgs) -> Result<PathBuf> {
    let k = match &s.keyring {
        Some(k) => k.clone(),
        None => default_keyring()?,
    };
    let (k_abs, s_abs) = (absolute(&k), absolute(&s.store));
    if k_abs.starts_with(&s_abs) {
        return Err(Error::Usage(format!(
            "the keyring {} is inside the store {}; keep keys apart from the data they protect",
            k.display(),
            s.store.display()
        )));
    }
    Ok(k)
}

/// Creates the store (or checks an existing one against the keyring) and records its first
/// access policy if it has none: the OS user running `init` administers it alone.
pub(super) async fn init(
    s: &StoreArgs,
    floor_days: Option<u32>,
    group_readable: bool,
    clock: Arc<dyn Clock>,
    out: &mut dyn Write,
) -> Result<()> {
    let floor = match floor_days {
        Some(d) => crate::config::RetentionFloor::new(d).map_err(Error::Usage)?,
        None => crate::config::RetentionFloor::default(),
    };
    let kpath = keyring_path(s)?;
    let now = crate::clock::fmt_ts(clock.now());
    let (ring, created) = if kpath.exists() {
        (LocalKeyring::load(&kpath)?, false)
    } else {
        (LocalKeyring::create(&kpath, &now)?, true)
    };
    if s.store.join(layout::STORE_MARKER).exists() {
        let store = Store::open_local(&s.store, false)?;
        let existing = read_marker(&store).await?;
        if existing.group_readable != group_readable {
            return Err(Error::conflict(
                format!(
                    "store {} is already initialised {}; file modes are chosen once, at init",
                    store.root().display(),
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
    let store = Store::init_local(&s.store, group_readable)?;
    let marker = StoreMarker {
        format: "holdfast.store".into(),
        version: 1,
        created_at: now,
        kek_id: ring.kek_id().to_string(),
        retention_floor_days: Some(floor.days),
        group_readable,
    };
    let path = layout::store_marker();
    match store
        .put_new(
            &path,
            serde_json::to_vec_pretty(&marker).expect("serializes"),
        )
        .await?
    {
        Put::Created => {
            let _ = writeln!(
                out,
                "initialised store {} (KEK {} in {}{}; retention floor {} days)",
                store.root().display(),
                ring.kek_id(),
                kpath.display(),
                if created { ", new keyring" } else { "" },
                floor.days
            );
        }
        Put::AlreadyExists => {
            let existing = read_marker(&store).await?;
            if existing.kek_id != ring.kek_id() {
                return Err(Error::conflict(
                    format!(
                        "store {} is bound to KEK {}, but keyring {} holds {}",
                        store.root().display(),
                        existing.kek_id,
                        kpath.display(),
                        ring.kek_id()
                    ),
                    false,
                ));
            }
            let recorded = existing
                .retention_floor_days
                .unwrap_or(crate::config::RetentionFloor::DEFAULT_DAYS);
            if floor_days.is_some_and(|d| d != recorded) {
                return Err(Error::conflict(
                    format!(
                        "store {} has a retention floor of {recorded} days; it is set once, at init, and never changed",
                        store.root().display()
                    ),
                    false,
                ));
            }
            let _ = writeln!(
                out,
                "store {} is already initialised (KEK {})",
                store.root().display(),
                ring.kek_id()
            );
        }
    }
    let os_user = crate::access::identity::os_user();
    if crate::access::admin::record_first(&store, clock.clone(), &os_user)
        .await?
        .is_some()
    {
        let _ = writeln!(
            out,
            "access policy recorded: {os_user} administers this store alone and holds every role; two-person actions wait until a second person is added (`holdfast access grant --user NAME --role admin …`)"
        );
    }
    // the signed head chain starts here, naming the first policy and the audit trail
    if crate::head::newest(&store).await?.is_none() {
        let audit = crate::audit::Audit::new(store.clone(), clock.clone());
        let c = crate::head::Committer {
            store: &store,
            kms: &ring,
            audit: &audit,
        };
        crate::head::commit(c, &crate::head::Change::new("init"), clock.now()).await?;
    }
    Ok(())
}

/// The store's retention floor, as its marker records it.
pub(super) async fn retention_floor(store: &Store) -> Result<crate::config::RetentionFloor> {
    let m = read_marker(store).await?;
    Ok(crate::config::RetentionFloor {
        days: m
            .retention_floor_days
            .unwrap_or(crate::config::RetentionFloor::DEFAULT_DAYS),
    })
}

/// `--store` naming nothing is a usage error (2); a path that exists but holds no store
/// marker is a runtime failure (1).
fn not_a_store(path: &Path) -> Error {
    let what = format!(
        "{} is not a holdfast store; run `holdfast init --store {}` first",
        path.display(),
        path.display()
    );
    if path.exists() {
        Error::Unusable(what)
    } else {
        Error::Usage(what)
    }
}

pub(super) async fn read_marker(store: &Store) -> Result<StoreMarker> {
    let path = layout::store_marker();
    let bytes = store
        .get_opt(&path)
        .await?
        .ok_or_else(|| not_a_store(store.root()))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::Unusable(format!(
            "{}: unreadable store marker: {e}",
            store.root().display()
        ))
    })
}

/// Opens an initialised store and its keyring, checking that they belong together.
pub(super) async fn open(s: &StoreArgs) -> Result<(Store, Arc<dyn Kms>)> {
    if !s.store.is_dir() {
        return Err(not_a_store(&s.store));
    }
    let store = Store::open_local(&s.store, false)?;
    let marker = read_marker(&store).await?;
    let kpath = keyring_path(s)?;
    let ring = LocalKeyring::load(&kpath)?;
    if ring.kek_id() != marker.kek_id {
        return Err(Error::conflict(
            format!(
                "store {} needs KEK {}, but keyring {} holds {}",
                store.root().display(),
                marker.kek_id,
                kpath.display(),
                ring.kek_id()
            ),
            false,
        ));
    }
    Ok((store, Arc::new(ring)))
}
