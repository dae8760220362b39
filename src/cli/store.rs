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
pub(super) async fn init(s: &StoreArgs, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
    let kpath = keyring_path(s)?;
    let now = crate::clock::fmt_ts(clock.now());
    let (ring, created) = if kpath.exists() {
        (LocalKeyring::load(&kpath)?, false)
    } else {
        (LocalKeyring::create(&kpath, &now)?, true)
    };
    let store = Store::open_local(&s.store, true)?;
    let marker = StoreMarker {
        format: "holdfast.store".into(),
        version: 1,
        created_at: now,
        kek_id: ring.kek_id().to_string(),
    };
    let path = object_store::path::Path::from(layout::STORE_MARKER);
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
                "initialised store {} (KEK {} in {}{})",
                store.root().display(),
                ring.kek_id(),
                kpath.display(),
                if created { ", new keyring" } else { "" }
            );
        }
        Put::AlreadyExists => {
            let existing = read_marker(&store).await?;
            if existing.kek_id != ring.kek_id() {
                return Err(Error::Usage(format!(
                    "store {} is bound to KEK {}, but keyring {} holds {}",
                    store.root().display(),
                    existing.kek_id,
                    kpath.display(),
                    ring.kek_id()
                )));
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
    if crate::access::admin::record_first(&store, clock, &os_user)
        .await?
        .is_some()
    {
        let _ = writeln!(
            out,
            "access policy recorded: {os_user} administers this store alone and holds every role; two-person actions wait until a second person is added (`holdfast access grant --user NAME --role admin …`)"
        );
    }
    Ok(())
}

pub(super) async fn read_marker(store: &Store) -> Result<StoreMarker> {
    let path = object_store::path::Path::from(layout::STORE_MARKER);
    let bytes = store.get_opt(&path).await?.ok_or_else(|| {
        Error::Usage(format!(
            "{} is not a holdfast store; run `holdfast init --store {}` first",
            store.root().display(),
            store.root().display()
        ))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::Usage(format!(
            "{}: unreadable store marker: {e}",
            store.root().display()
        ))
    })
}

/// Opens an initialised store and its keyring, checking that they belong together.
pub(super) async fn open(s: &StoreArgs) -> Result<(Store, Arc<dyn Kms>)> {
    if !s.store.is_dir() {
        return Err(Error::Usage(format!(
            "{} is not a holdfast store; run `holdfast init --store {}` first",
            s.store.display(),
            s.store.display()
        )));
    }
    let store = Store::open_local(&s.store, false)?;
    let marker = read_marker(&store).await?;
    let kpath = keyring_path(s)?;
    let ring = LocalKeyring::load(&kpath)?;
    if ring.kek_id() != marker.kek_id {
        return Err(Error::Usage(format!(
            "store {} needs KEK {}, but keyring {} holds {}",
            store.root().display(),
            marker.kek_id,
            kpath.display(),
            ring.kek_id()
        )));
    }
    Ok((store, Arc::new(ring)))
}
