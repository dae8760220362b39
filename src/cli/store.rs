//! The store and keyring a command opens (`init`; the keyring's default location); the rules
//! live in [`crate::store`].

use super::*;

#[derive(Debug, clap::Args, Clone)]
pub struct StoreArgs {
    /// Store: a directory (a path or file:///path), s3://BUCKET/PREFIX or memory://NAME
    #[arg(long, env = "HOLDFAST_STORE")]
    pub store: crate::storage::StoreUrl,
    /// Local keyring file (default: $XDG_CONFIG_HOME/holdfast/keyring.json; never inside a store)
    #[arg(long, env = "HOLDFAST_KEYRING")]
    pub keyring: Option<PathBuf>,
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
    /// For an s3:// store: create the bucket if it is missing, versioned and with Object
    /// Lock on (no default retention)
    #[arg(long)]
    pub create_bucket: bool,
    /// For an s3:// store: the Object Lock mode of its data files, recorded once: compliance
    /// (nobody can delete early; the default) or governance (a principal allowed
    /// s3:BypassGovernanceRetention can; holdfast never does)
    #[arg(long, value_parser = ["compliance", "governance"])]
    pub object_lock_mode: Option<String>,
    /// Pipeline file whose [kms] section names the key service to bind the store to
    /// (default: the local keyring)
    #[arg(long, env = "HOLDFAST_PIPELINE")]
    pub pipeline: Option<PathBuf>,
}

pub(super) fn default_keyring() -> Result<PathBuf> {
    let base = match files::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(
            files::var_os("HOME")
                .ok_or_else(|| Error::Usage("set HOME, XDG_CONFIG_HOME or --keyring".into()))?,
        )
        .join(".config"),
    };
    Ok(base.join("holdfast").join("keyring.json"))
}

/// `--keyring`, else the default location.
pub(super) fn keyring_of(s: &StoreArgs) -> Result<PathBuf> {
    match &s.keyring {
        Some(k) => Ok(k.clone()),
        None => default_keyring(),
    }
}

impl InitArgs {
    pub(super) async fn run(self, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        let kms = match &self.pipeline {
            Some(p) => Pipeline::load(p)?.kms,
            None => None,
        };
        let remote = kms.as_ref().map(super::kms::remote_of).transpose()?;
        let opts = InitOptions {
            floor_days: self.retention_floor_days,
            group_readable: self.group_readable,
            create_bucket: self.create_bucket,
            object_lock_mode: self.object_lock_mode,
            remote: remote.flatten(),
        };
        init(&self.s, &opts, clock, out).await
    }
}

/// What `init` chooses beyond the store.
pub(super) struct InitOptions {
    pub(super) floor_days: Option<u32>,
    pub(super) group_readable: bool,
    pub(super) create_bucket: bool,
    pub(super) object_lock_mode: Option<String>,
    /// The Transit or AWS KMS key to bind the store to (`None`: the local keyring).
    pub(super) remote: Option<super::kms::Remote>,
}

/// Creates the store (or checks an existing one against the keyring); the OS user running
/// it administers a new store alone.
pub(super) async fn init(
    s: &StoreArgs,
    o: &InitOptions,
    clock: Arc<dyn Clock>,
    out: &mut dyn Write,
) -> Result<()> {
    let keyring = keyring_of(s)?;
    let admin = crate::access::identity::os_user();
    let req = crate::store::InitRequest {
        store: &s.store,
        keyring: &keyring,
        transit: o.remote.as_ref().and_then(|r| r.transit()),
        aws_kms: o.remote.as_ref().and_then(|r| r.aws_kms()),
        retention_floor_days: o.floor_days,
        group_readable: o.group_readable,
        create_bucket: o.create_bucket,
        object_lock_mode: o.object_lock_mode.as_deref(),
        admin: &admin,
    };
    let done = crate::store::init(&req, clock).await?;
    if done.created {
        let _ = writeln!(
            out,
            "initialised store {} (KEK {} in {}{}; retention floor {} days)",
            done.store,
            done.kek_id,
            done.kms,
            if done.new_keyring {
                ", new keyring"
            } else {
                ""
            },
            done.retention_floor_days
        );
    } else {
        let _ = writeln!(
            out,
            "store {} is already initialised (KEK {})",
            done.store, done.kek_id
        );
    }
    if done.policy_recorded {
        let _ = writeln!(
            out,
            "access policy recorded: {admin} administers this store alone and holds every role; two-person actions wait until a second person is added (`holdfast access grant --user NAME --role admin …`)"
        );
    }
    Ok(())
}

/// Checks that `store` is an initialised store (its marker).
pub(super) async fn read_marker(store: &Store) -> Result<crate::store::StoreMarker> {
    crate::store::read_marker(store).await
}

/// Opens an initialised store and its key service (the keyring, or the Transit or AWS KMS
/// key its marker names), checking that they belong together.
pub(super) async fn open(s: &StoreArgs) -> Result<(Store, Arc<dyn Kms>)> {
    super::kms::open_for(s, None).await
}
