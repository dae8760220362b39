//! The `holdfast` command line. The only module that reads the environment, prints, or
//! chooses exit codes (0 success, 1 failure, 2 usage).

mod access;
mod anchor;
mod audit;
mod batch;
mod export;
mod files;
mod hold;
mod keys;
mod kms;
pub mod output;
mod quarantine;
mod query;
mod serve;
mod store;
mod sweep;
mod table;
mod verify;

use crate::clock::Clock;
use crate::config::{Pipeline, Policies};
use crate::crypto::kms::Kms;
use crate::error::{Error, Result};
use crate::job::{self, Context};
use crate::sources::SourceKind;
use crate::storage::Store;
use clap::{Parser, Subcommand};
use output::Format;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use access::*;
use anchor::*;
use audit::*;
use batch::*;
use export::*;
use hold::*;
use keys::*;
use quarantine::*;
use query::*;
use serve::*;
use store::*;
use sweep::*;
use table::*;
use verify::*;

#[derive(Debug, Parser)]
#[command(
    name = "holdfast",
    version,
    about = "Encrypted, tamper-evident retention store for contact-center interaction metadata"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a store and, if missing, the local keyring (outside the store)
    #[command(after_help = "Example:\n  holdfast init --store data --retention-floor-days 1825")]
    Init(InitArgs),
    /// Append raw events to the landing zone ('-' reads stdin)
    #[command(
        after_help = "Example:\n  holdfast ingest --store data --source auto --tenant tenant-fixture fixtures/nice-contacts/input.ndjson"
    )]
    Ingest(IngestArgs),
    /// Run one micro-batch: landing zone -> lake; prints a summary
    #[command(
        after_help = "Example:\n  holdfast batch --store data --pipeline pipelines/local.toml --format json"
    )]
    Batch(BatchArgs),
    /// Check the store against its signed head; exit 1 on any problem (no key needed)
    ///
    /// Checks manifests, data files, the audit trail, holds and locks against the newest signed
    /// head; `--deep` also decrypts every record (audited).
    #[command(after_help = "Example:\n  holdfast verify --store data")]
    Verify(VerifyArgs),
    /// Print the newest signed head's digest and key fingerprint, to publish outside the store
    #[command(after_help = "Example:\n  holdfast anchor --store data")]
    Anchor(AnchorArgs),
    /// Read-only SQL over events, interactions, manifests, removals, audit (and decrypted)
    ///
    /// Tables: `events`, `interactions`, `manifests`, `removals` and `audit`; with `--decrypt
    /// --case C` also `decrypted`, `decrypt_payload()` and `blind_index()` (audited).
    #[command(
        after_help = "Example:\n  holdfast query --store data \"SELECT interaction_type, count(*) AS events FROM events GROUP BY 1 ORDER BY 1\""
    )]
    Query(QueryArgs),
    /// Export committed rows to Parquet with Snowflake or BigQuery load scripts and a custody record
    ///
    /// Index columns by default (nothing decrypted); `--decrypt --case C` writes whole records
    /// as typed columns (a production, audited). `export verify DIR` checks one.
    #[command(
        after_help = "Example:\n  holdfast export --store data --target snowflake --out export-q1 --from 2025-10-01 --until 2025-12-31"
    )]
    Export(ExportArgs),
    /// Dry run of the current adapters and schema over landing and quarantine; writes nothing
    #[command(after_help = "Example:\n  holdfast validate --store data --case DEMO-1")]
    Validate(ValidateArgs),
    /// Receive events over HTTP (202 once durable), batch on a schedule, serve /metrics
    ///
    /// Reads the pipeline's [serve] section: listen address, tokens file, batch schedule and
    /// limits. Initialises the store if it is new.
    #[command(after_help = "Example:\n  holdfast serve --pipeline pipelines/serve.toml --check")]
    Serve(ServeArgs),
    /// Bearer tokens for `holdfast serve`
    #[command(
        after_help = "Example:\n  holdfast token add --tokens tokens.toml --principal genesys-prod --tenant acme --source genesys-eventbridge"
    )]
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Interactive SQL shell with history; statements end with `;`, `\q` quits
    ///
    /// Reads statements from stdin when it is not a terminal.
    #[command(
        after_help = "Example:\n  echo \"SELECT count(*) FROM interactions;\" | holdfast sql --store data"
    )]
    Sql(SqlArgs),
    /// Retention sweep: delete expired files, rewrite part-expired ones (plans from manifests)
    #[command(
        after_help = "Example:\n  holdfast sweep --store data --dry-run --now 2031-06-01T00:00:00Z"
    )]
    Sweep(SweepArgs),
    /// Retention questions
    #[command(
        after_help = "Example:\n  holdfast retention explain --store data --event 1fdcee50-50d7-4d5e-96f8-a8fe31707850"
    )]
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Legal holds: place, preview, release (two people), sync, list
    #[command(after_help = "Example:\n  holdfast hold list --store data")]
    Hold {
        #[command(subcommand)]
        command: HoldCommand,
    },
    /// The committed set as a Delta Lake table (_delta_log): rebuild it, register it in an engine
    ///
    /// Every batch and sweep publishes the table's next version; engines that read Delta
    /// (Snowflake, BigQuery, Athena, Trino, Spark, DuckDB, polars) see exactly the committed files.
    #[command(after_help = "Example:\n  holdfast table ddl --store data --engine trino")]
    Table {
        #[command(subcommand)]
        command: TableCommand,
    },
    /// The tamper-evident audit trail
    #[command(after_help = "Example:\n  holdfast audit verify --store data")]
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Inspect and replay quarantined events
    #[command(after_help = "Example:\n  holdfast quarantine list --store data")]
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// Run a pipeline file: initialise the store if needed, ingest its sources, run a batch
    #[command(after_help = "Example:\n  holdfast run pipelines/local.toml")]
    Run(RunArgs),
    /// The store's access policy: who acts as whom, roles; changes need two administrators
    #[command(after_help = "Example:\n  holdfast access whoami --store data")]
    Access {
        #[command(subcommand)]
        command: AccessCommand,
    },
    /// Key-encryption keys: status, rotation, rewrapping every DEK to the newest version
    #[command(after_help = "Example:\n  holdfast keys status --store data")]
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

/// The system clock; test builds may pin it with `HOLDFAST_NOW` ([`crate::hooks`]).
fn clock() -> Result<Arc<dyn Clock>> {
    crate::hooks::clock_from_env().map_err(Error::Usage)
}

impl Command {
    pub async fn run(self, out: &mut dyn Write) -> Result<()> {
        let clock = clock()?;
        match self {
            Command::Init(a) => a.run(clock, out).await,
            Command::Ingest(a) => a.run(clock, out).await,
            Command::Batch(a) => a.run(clock, out).await,
            Command::Verify(a) => a.run(clock, out).await,
            Command::Anchor(a) => a.run(clock, out).await,
            Command::Query(a) => a.run(clock, out).await,
            Command::Export(a) => a.run(clock, out).await,
            Command::Validate(a) => a.run(clock, out).await,
            Command::Sql(a) => a.run(clock, out).await,
            Command::Sweep(a) => a.run(clock, out).await,
            Command::Retention { command } => command.run(clock, out).await,
            Command::Hold { command } => command.run(clock, out).await,
            Command::Audit { command } => audit_command(command, clock, out).await,
            Command::Table { command } => command.run(clock, out).await,
            Command::Quarantine { command } => command.run(clock, out).await,
            Command::Run(a) => a.run(clock, out).await,
            Command::Serve(a) => a.run(clock, out).await,
            Command::Token { command } => command.run(clock, out).await,
            Command::Access { command } => command.run(clock, out).await,
            Command::Keys { command } => command.run(clock, out).await,
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = rt.block_on(cli.command.run(&mut out));
    let _ = out.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.report());
            ExitCode::from(e.exit_code())
        }
    }
}
