//! `keys status`, `keys rotate`, `keys rewrap`, `keys retire`, `keys bind`, `keys approve`: the
//! store's KEK versions and the DEKs they wrap, and tenants' own keys (BYOK). The key service
//! is the pipeline's `[kms]` when `--pipeline` is given, else the one the store's marker names;
//! `--tenant T` acts on tenant T's own key instead.

use super::*;
use crate::keys::{self, DEFAULT_CRYPTOPERIOD_DAYS};

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub s: StoreArgs,
    /// Pipeline file: its `[kms]` (backend, key, `cryptoperiod_days`)
    #[arg(long, env = "HOLDFAST_PIPELINE")]
    pub pipeline: Option<PathBuf>,
}

/// Which key a key command acts on.
#[derive(Debug, clap::Args)]
pub struct TenantArg {
    /// A tenant's own key (BYOK) instead of the store's platform key
    #[arg(long)]
    pub tenant: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Every KEK version: age against the cryptoperiod, DEKs it wraps (by home), warnings
    #[command(after_help = "Example:\n  holdfast keys status --store data")]
    Status {
        #[command(flatten)]
        k: KeysArgs,
        /// Output format
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Make a new KEK version in the backend; new DEKs are wrapped under it (admin, audited)
    #[command(after_help = "Example:\n  holdfast keys rotate --store data")]
    Rotate {
        #[command(flatten)]
        k: KeysArgs,
        #[command(flatten)]
        who: ActorArg,
        #[command(flatten)]
        t: TenantArg,
    },
    /// Ask to retire a KEK version (and older ones): refused while any DEK is wrapped under it
    ///
    /// A different administrator approves with `keys approve`; both steps are audited.
    #[command(after_help = "Example:\n  holdfast keys retire --store data --version 1")]
    Retire {
        #[command(flatten)]
        k: KeysArgs,
        #[command(flatten)]
        who: ActorArg,
        /// The version to retire, with every older one
        #[arg(long)]
        version: u32,
        #[command(flatten)]
        t: TenantArg,
    },
    /// Ask that a tenant's records be wrapped under a key of its own (BYOK)
    ///
    /// The key is the one the pipeline's `[kms.tenants.T]` names; a different administrator
    /// approves with `keys approve`, and only then does the store bind the tenant to it. A
    /// tenant is bound before its first batch; both steps are audited.
    #[command(
        after_help = "Example:\n  holdfast keys bind --store data --pipeline byok.toml --tenant acme"
    )]
    Bind {
        #[command(flatten)]
        k: KeysArgs,
        #[command(flatten)]
        who: ActorArg,
        /// The tenant
        #[arg(long)]
        tenant: String,
    },
    /// Ask to move the store to a new AWS KMS key (the one the pipeline's `[kms]` names)
    ///
    /// Once a different administrator approves (`keys approve`), new DEKs are wrapped under it;
    /// `keys rewrap` then moves the existing ones with ReEncrypt, and DEKs not yet moved still
    /// unwrap under the earlier key. Both steps are audited.
    #[command(
        after_help = "Example:\n  holdfast keys migrate --store data --pipeline new-key.toml"
    )]
    Migrate {
        #[command(flatten)]
        k: KeysArgs,
        #[command(flatten)]
        who: ActorArg,
    },
    /// Approve another administrator's retire, bind or migrate request
    #[command(after_help = "Example:\n  holdfast keys approve --store data --request kr-0a1b2c3d")]
    Approve {
        #[command(flatten)]
        k: KeysArgs,
        #[command(flatten)]
        who: ActorArg,
        /// The request id `keys retire`, `keys bind` or `keys migrate` printed
        #[arg(long)]
        request: String,
    },
    /// Wrap every DEK again under the newest KEK version; no data file is rewritten
    ///
    /// Data-file DEKs get new manifest versions; those of landing and failed segments,
    /// quarantine entries and the index secret get a newer wrapping stored beside them.
    /// Resumable, idempotent, never beside a batch or sweep (admin, audited).
    #[command(after_help = "Example:\n  holdfast keys rewrap --store data")]
    Rewrap {
        #[command(flatten)]
        k: KeysArgs,
        #[command(flatten)]
        who: ActorArg,
        /// Output format
        #[arg(long, value_enum)]
        format: Option<Format>,
        #[command(flatten)]
        t: TenantArg,
    },
}

/// The key service `tenant` names: that tenant's own, or the platform's.
fn pick(kms: &Arc<dyn Kms>, tenant: Option<&str>) -> Result<Arc<dyn Kms>> {
    match tenant {
        None => Ok(kms.clone()),
        Some(t) => kms.tenant(t).ok_or_else(|| {
            Error::Usage(format!(
                "tenant `{t}` has no key of its own in this store (`holdfast keys status` lists those that do)"
            ))
        }),
    }
}

impl KeysArgs {
    /// The store, its key service and the cryptoperiod.
    async fn open(&self) -> Result<(Store, Arc<dyn Kms>, u32)> {
        let p = self.pipeline.as_deref().map(Pipeline::load).transpose()?;
        let cfg = p.as_ref().and_then(|p| p.kms.as_ref());
        let (store, kms) = super::kms::open_for(&self.s, cfg).await?;
        let days = cfg
            .and_then(|k| k.cryptoperiod_days)
            .unwrap_or(DEFAULT_CRYPTOPERIOD_DAYS);
        Ok((store, kms, days))
    }
}

impl KeysCommand {
    pub(super) async fn run(self, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        match self {
            KeysCommand::Status { k, format } => {
                let (store, kms, days) = k.open().await?;
                let status = keys::status(&store, kms.as_ref(), clock.now(), days).await?;
                output::write_report(format.unwrap_or(Format::Table), &status, out)
            }
            KeysCommand::Rotate { k, who, t } => {
                let (store, kms, _) = k.open().await?;
                let kms = pick(&kms, t.tenant.as_deref())?;
                let session = session(&store, clock, &who).await?;
                let v = keys::rotate(&session, kms.as_ref()).await?;
                writeln!(
                    out,
                    "{}: new version v{v}; new DEKs are wrapped under it. Run `holdfast keys rewrap` to move the existing ones.",
                    kms.kek_id()
                )
                .map_err(|e| Error::io("writing the output", e))
            }
            KeysCommand::Retire { k, who, version, t } => {
                let (store, kms, _) = k.open().await?;
                let kms = pick(&kms, t.tenant.as_deref())?;
                let session = session(&store, clock, &who).await?;
                let id =
                    keys::retire::request(&session, kms.as_ref(), version, t.tenant.as_deref())
                        .await?;
                writeln!(
                    out,
                    "request {id}: retire {} v{version} and older; another administrator runs `holdfast keys approve --request {id}` within {} days",
                    kms.kek_id(),
                    keys::retire::REQUEST_DAYS
                )
                .map_err(|e| Error::io("writing the output", e))
            }
            KeysCommand::Bind { k, who, tenant } => bind(k, who, &tenant, clock, out).await,
            KeysCommand::Approve { k, who, request } if request.starts_with("kb-") => {
                approve_bind(k, who, &request, clock, out).await
            }
            KeysCommand::Migrate { k, who } => migrate(k, who, None, clock, out).await,
            KeysCommand::Approve { k, who, request } if request.starts_with("km-") => {
                migrate(k, who, Some(&request), clock, out).await
            }
            KeysCommand::Approve { k, who, request } => {
                let (store, kms, _) = k.open().await?;
                let session = session(&store, clock, &who).await?;
                let r = match keys::retire::requested_tenant(&session, &request).await? {
                    Some(t) => {
                        keys::retire::approve(&session, pick(&kms, Some(&t))?.as_ref(), &request)
                            .await?
                    }
                    None => keys::retire::approve(&session, kms.as_ref(), &request).await?,
                };
                writeln!(
                    out,
                    "{}: v{} and older retired (asked by {}, approved by {}); the backend unwraps from v{} on",
                    r.kek_id, r.version, r.requested_by, r.approved_by, r.min_decryption_version
                )
                .map_err(|e| Error::io("writing the output", e))
            }
            KeysCommand::Rewrap { k, who, format, t } => {
                rewrap(k, who, t, format, clock, out).await
            }
        }
    }
}

async fn rewrap(
    k: KeysArgs,
    who: ActorArg,
    t: TenantArg,
    format: Option<Format>,
    clock: Arc<dyn Clock>,
    out: &mut dyn Write,
) -> Result<()> {
    let (store, kms, _) = k.open().await?;
    let session = session(&store, clock, &who).await?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress = move |done: u64, total: u64| {
        if tty {
            eprint!("\rrewrapped {done}/{total} DEKs");
            if done == total {
                eprintln!();
            }
        }
    };
    let ctx = keys::rewrap::RewrapContext {
        session: &session,
        kms: kms.as_ref(),
        tenant: t.tenant.as_deref(),
        failpoints: &crate::hooks::Failpoints::from_env(),
        progress: &progress,
    };
    let report = keys::rewrap(&ctx).await?;
    output::write_report(format.unwrap_or(Format::Table), &report, out)
}

/// The key service a pipeline's `[kms.tenants.T]` names, opened for tenant T (its KEK id
/// checked by the request and the approval).
async fn own_key(k: &KeysArgs, tenant: &str) -> Result<(Store, Arc<dyn Kms>, Arc<dyn Kms>)> {
    let p = k.pipeline.as_deref().map(Pipeline::load).transpose()?;
    let cfg = p.as_ref().and_then(|p| p.kms.as_ref());
    let Some(section) = cfg.and_then(|c| c.tenants.get(tenant)) else {
        return Err(Error::Usage(format!(
            "pass the pipeline (--pipeline) whose [kms.tenants.{tenant}] names the tenant's own key"
        )));
    };
    let (store, kms) = super::kms::open_skipping(&k.s, cfg, tenant).await?;
    let own = crate::store::open_tenant_key(tenant, super::kms::tenant_remote(section)).await?;
    Ok((store, kms, own))
}

async fn bind(
    k: KeysArgs,
    who: ActorArg,
    tenant: &str,
    clock: Arc<dyn Clock>,
    out: &mut dyn Write,
) -> Result<()> {
    let (store, kms, own) = own_key(&k, tenant).await?;
    let session = session(&store, clock, &who).await?;
    let id = keys::bind::request(&session, kms.as_ref(), tenant, own.as_ref()).await?;
    writeln!(
        out,
        "request {id}: bind tenant {tenant} to its own key {}; another administrator runs `holdfast keys approve --request {id}` with the same pipeline within {} days",
        own.kek_id(),
        keys::retire::REQUEST_DAYS
    )
    .map_err(|e| Error::io("writing the output", e))
}

async fn approve_bind(
    k: KeysArgs,
    who: ActorArg,
    request: &str,
    clock: Arc<dyn Clock>,
    out: &mut dyn Write,
) -> Result<()> {
    let store = crate::store::open_unkeyed(&k.s.store).await?;
    let tenant = {
        let session = session(&store, clock.clone(), &who).await?;
        keys::bind::requested_tenant(&session, request).await?
    };
    let (store, kms, own) = own_key(&k, &tenant).await?;
    let session = session(&store, clock, &who).await?;
    let b = keys::bind::approve(&session, kms.as_ref(), own.as_ref(), request).await?;
    writeln!(
        out,
        "tenant {}: bound to its own key {} (asked by {}, approved by {}); its new records are wrapped under it",
        b.tenant, b.kek_id, b.requested_by, b.approved_by
    )
    .map_err(|e| Error::io("writing the output", e))
}

/// `keys migrate` (a request) or its approval: the store opened with its platform key in
/// force, the new key as the pipeline's `[kms]` names it.
async fn migrate(
    k: KeysArgs,
    who: ActorArg,
    request: Option<&str>,
    clock: Arc<dyn Clock>,
    out: &mut dyn Write,
) -> Result<()> {
    let p = k.pipeline.as_deref().map(Pipeline::load).transpose()?;
    let Some(cfg) = p.as_ref().and_then(|p| p.kms.as_ref()) else {
        return Err(Error::Usage(
            "pass the pipeline (--pipeline) whose [kms] names the new key".into(),
        ));
    };
    let Some(super::kms::Remote::AwsKms(aws)) = super::kms::remote_of(cfg)? else {
        return Err(Error::Usage(
            "`keys migrate` moves a store to another AWS KMS key: the pipeline's [kms] needs backend = \"aws-kms\"".into(),
        ));
    };
    let (store, kms) = super::kms::open_for(&k.s, None).await?;
    if !crate::crypto::kms::aws::is_key_arn(kms.kek_id()) {
        return Err(Error::Usage(format!(
            "store {} keeps its KEK in {}: `keys migrate` moves a store between AWS KMS keys; a Transit key or the local keyring rotates in place (`holdfast keys rotate`)",
            store.describe(),
            kms.describe()
        )));
    }
    let new = crate::crypto::kms::aws::AwsKms::connect(&aws).await?;
    let session = session(&store, clock, &who).await?;
    let text = match request {
        None => {
            let id = keys::platform::request(&session, kms.as_ref(), &new).await?;
            format!(
                "request {id}: move the store from {} to {}; another administrator runs `holdfast keys approve --request {id}` with the same pipeline within {} days",
                kms.kek_id(),
                new.kek_id(),
                keys::retire::REQUEST_DAYS
            )
        }
        Some(id) => {
            let c = keys::platform::approve(&session, kms.as_ref(), &new, id).await?;
            format!(
                "the store's platform key is {} now (was {}; asked by {}, approved by {}); run `holdfast keys rewrap` to move the existing DEKs",
                c.kek_id, c.replaces, c.requested_by, c.approved_by
            )
        }
    };
    writeln!(out, "{text}").map_err(|e| Error::io("writing the output", e))
}
