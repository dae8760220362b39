//! The `holdfast` command line. The only module that reads the environment, prints, or
//! chooses exit codes (0 success, 1 failure, 2 usage).

// the one module that reads the environment (store, keyring and history locations) and the
// caller's own files (inputs, pipeline and hold files, query output)
#![allow(clippy::disallowed_methods)]

mod access;
mod anchor;
mod audit;
mod batch;
mod hold;
pub mod output;
mod quarantine;
mod query;
mod store;
mod sweep;
mod verify;

use crate::clock::Clock;
use crate::config::{Pipeline, Policies};
use crate::crypto::kms::{Kms, LocalKeyring};
use crate::error::{Error, Result};
use crate::job::{self, BatchOptions, Context};
use crate::lake::layout;
use crate::sources::SourceKind;
use crate::storage::{Put, Store};
use clap::{Parser, Subcommand};
use output::Format;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use access::*;
use anchor::*;
use audit::*;
use batch::*;
use hold::*;
use quarantine::*;
use query::*;
use store::*;
use sweep::*;
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
    Init(InitArgs),
    /// Append raw events to the landing zone ('-' reads stdin)
    Ingest(IngestArgs),
    /// Run one micro-batch: landing zone -> lake; prints a summary
    Batch(BatchArgs),
    /// Check the store against its signed head: manifests, data files, audit trail, holds and locks (no key needed); exit 1 on any problem
    Verify(VerifyArgs),
    /// Print the newest signed store head's digest and key fingerprint, to publish outside the store
    Anchor(AnchorArgs),
    /// Run SQL over `events`, `interactions`, `manifests` and `audit` (and, with --decrypt, `decrypted`)
    Query(QueryArgs),
    /// Dry run of the current adapters and schema over the landing zone and quarantine; writes nothing
    Validate(ValidateArgs),
    /// Interactive SQL shell with history; statements end with `;`, `\q` quits. Reads
    /// statements from stdin when it is not a terminal.
    Sql(SqlArgs),
    /// Retention sweep: delete expired files, rewrite files mixing expired and surviving records (plan from the manifests only)
    Sweep(SweepArgs),
    /// Retention questions
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Legal holds: place, release (two people), list
    Hold {
        #[command(subcommand)]
        command: HoldCommand,
    },
    /// The tamper-evident audit trail
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Inspect and replay quarantined events
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// Run a pipeline file: initialise the store if needed, ingest its sources, run a batch
    Run(RunArgs),
    /// The store's access policy: who may act as whom, roles and their tenants; changes need two administrators
    Access {
        #[command(subcommand)]
        command: AccessCommand,
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
            Command::Init(a) => {
                init(&a.s, a.retention_floor_days, a.group_readable, clock, out).await
            }
            Command::Ingest(a) => a.run(clock, out).await,
            Command::Batch(a) => a.run(clock, out).await,
            Command::Verify(a) => a.run(clock, out).await,
            Command::Anchor(a) => a.run(clock, out).await,
            Command::Query(a) => a.run(clock, out).await,
            Command::Validate(a) => a.run(clock, out).await,
            Command::Sql(a) => a.run(clock, out).await,
            Command::Sweep(a) => a.run(clock, out).await,
            Command::Retention { command } => command.run(clock, out).await,
            Command::Hold { command } => hold_command(command, clock, out).await,
            Command::Audit { command } => audit_command(command, clock, out).await,
            Command::Quarantine { command } => command.run(clock, out).await,
            Command::Run(a) => a.run(clock, out).await,
            Command::Access { command } => command.run(clock, out).await,
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
