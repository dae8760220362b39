//! `keys status`, `keys rotate`, `keys rewrap`: the store's KEK versions and the DEKs they
//! wrap. The key service is the pipeline's `[kms]` when `--pipeline` is given, else the one
//! the store's marker names.

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
    },
    /// Approve another administrator's retire request: the backend stops unwrapping under it
    #[command(after_help = "Example:\n  holdfast keys approve --store data --request kr-0a1b2c3d")]
    Approve {
        #[command(flatten)]
        k: KeysArgs,
        #[command(flatten)]
        who: ActorArg,
        /// The request id `keys retire` printed
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
    },
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
            KeysCommand::Rotate { k, who } => {
                let (store, kms, _) = k.open().await?;
                let session = session(&store, clock, &who).await?;
                let v = keys::rotate(&session, kms.as_ref()).await?;
                writeln!(
                    out,
                    "{}: new version v{v}; new DEKs are wrapped under it. Run `holdfast keys rewrap` to move the existing ones.",
                    kms.kek_id()
                )
                .map_err(|e| Error::io("writing the output", e))
            }
            KeysCommand::Retire { k, who, version } => {
                let (store, kms, _) = k.open().await?;
                let session = session(&store, clock, &who).await?;
                let id = keys::retire::request(&session, kms.as_ref(), version).await?;
                writeln!(
                    out,
                    "request {id}: retire {} v{version} and older; another administrator runs `holdfast keys approve --request {id}` within {} days",
                    kms.kek_id(),
                    keys::retire::REQUEST_DAYS
                )
                .map_err(|e| Error::io("writing the output", e))
            }
            KeysCommand::Approve { k, who, request } => {
                let (store, kms, _) = k.open().await?;
                let session = session(&store, clock, &who).await?;
                let r = keys::retire::approve(&session, kms.as_ref(), &request).await?;
                writeln!(
                    out,
                    "{}: v{} and older retired (asked by {}, approved by {}); the backend unwraps from v{} on",
                    r.kek_id, r.version, r.requested_by, r.approved_by, r.min_decryption_version
                )
                .map_err(|e| Error::io("writing the output", e))
            }
            KeysCommand::Rewrap { k, who, format } => {
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
                    failpoints: &crate::hooks::Failpoints::from_env(),
                    progress: &progress,
                };
                let report = keys::rewrap(&ctx).await?;
                output::write_report(format.unwrap_or(Format::Table), &report, out)
            }
        }
    }
}
