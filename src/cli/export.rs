//! `export`: committed rows to Parquet files for Snowflake, BigQuery or counsel, with load
//! scripts and a custody record; `export verify` checks one.

use super::*;
use crate::export::{self, Given, Target};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TargetArg {
    Snowflake,
    Bigquery,
    Parquet,
}

impl From<TargetArg> for Target {
    fn from(t: TargetArg) -> Self {
        match t {
            TargetArg::Snowflake => Target::Snowflake,
            TargetArg::Bigquery => Target::BigQuery,
            TargetArg::Parquet => Target::Parquet,
        }
    }
}

/// Export committed rows (index columns; with --decrypt, whole records for a case)
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub command: Option<ExportCommand>,
    #[command(flatten)]
    pub run: ExportRun,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Recompute every hash and count of an export against its custody.json; exit 1 on any mismatch
    #[command(after_help = "Example:\n  holdfast export verify export-q1")]
    Verify {
        /// The export directory
        dir: PathBuf,
        /// The store, to find the audit entries that vouch for the export (default: the
        /// store custody.json names, when it is a local directory)
        #[arg(long)]
        store: Option<crate::storage::StoreUrl>,
        /// Output format of the report
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
}

/// The export's own flags (optional to clap only so that `export verify` needs none of
/// them; `--store`, `--target` and `--out` are required without it).
#[derive(Debug, clap::Args)]
pub struct ExportRun {
    /// Store: a directory (a path or file:///path), s3://BUCKET/PREFIX or memory://NAME
    #[arg(long, env = "HOLDFAST_STORE", required = true)]
    pub store: Option<crate::storage::StoreUrl>,
    /// Local keyring file (default: $XDG_CONFIG_HOME/holdfast/keyring.json; never inside a store)
    #[arg(long, env = "HOLDFAST_KEYRING")]
    pub keyring: Option<PathBuf>,
    /// Where the rows go: load scripts for Snowflake or BigQuery, or Parquet alone
    #[arg(long, value_enum, required = true)]
    pub target: Option<TargetArg>,
    /// The export directory (created; must be empty if it exists)
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
    /// First day of occurred_at (UTC), inclusive
    #[arg(long)]
    pub from: Option<chrono::NaiveDate>,
    /// Last day of occurred_at (UTC), inclusive
    #[arg(long)]
    pub until: Option<chrono::NaiveDate>,
    /// One tenant's rows
    #[arg(long)]
    pub tenant: Option<String>,
    /// A SQL predicate over events (with --decrypt, over decrypted)
    #[arg(long = "where")]
    pub predicate: Option<String>,
    /// The rows whose event_id a named query returns (its {{name}} placeholders from --param)
    #[arg(long, conflicts_with = "hold")]
    pub file: Option<PathBuf>,
    /// name=value for --file's placeholders
    #[arg(long = "param", value_parser = parse_param, requires = "file")]
    pub params: Vec<(String, String)>,
    /// Exactly the records this legal hold covers, expired or not
    #[arg(long)]
    pub hold: Option<String>,
    /// Decrypt whole records into typed columns (a production): needs --case, --actor and the investigator role; audited
    #[arg(long)]
    pub decrypt: bool,
    /// The case the production is for
    #[arg(long = "case", requires = "decrypt")]
    pub case_ref: Option<String>,
    #[command(flatten)]
    pub who: ActorArg,
    /// The warehouse table the scripts create and load
    #[arg(long, default_value = "holdfast_events")]
    pub table: String,
    /// Close a data file once it reaches this size (Snowflake advises 100-250 MB compressed)
    #[arg(long, default_value_t = 200)]
    pub file_mb: u64,
    /// Output format of the summary
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

impl ExportArgs {
    pub(super) async fn run(self, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        match self.command {
            Some(ExportCommand::Verify { dir, store, format }) => {
                verify(&dir, store, format, out).await
            }
            None => self.run.run(clock, out).await,
        }
    }
}

fn table_name_ok(t: &str) -> bool {
    let mut chars = t.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && t.len() <= 128
}

impl ExportRun {
    async fn run(self, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        let (Some(store), Some(target), Some(dir)) = (self.store, self.target, self.out) else {
            return Err(Error::Usage(
                "give --store, --target and --out (or `export verify DIR`)".into(),
            ));
        };
        let s = StoreArgs {
            store,
            keyring: self.keyring,
        };
        if !table_name_ok(&self.table) {
            return Err(Error::Usage(format!(
                "--table {:?}: letters, digits and _ only, starting with a letter or _",
                self.table
            )));
        }
        let query = match &self.file {
            Some(f) => Some(
                crate::query::named::bind(
                    &files::read_to_string(f)
                        .map_err(|e| Error::io(format!("reading {}", f.display()), e))?,
                    &self.params,
                )
                .map_err(Error::Usage)?,
            ),
            None => None,
        };
        let (store, kms) = if self.decrypt {
            let (s, k) = open(&s).await?;
            (s, Some(k))
        } else {
            (crate::store::open_unkeyed(&s.store).await?, None)
        };
        let session = session(&store, clock, &self.who).await?;
        let req = export::Request {
            target: target.into(),
            out: &dir,
            table: &self.table,
            given: Given {
                from: self.from,
                until: self.until,
                tenant: self.tenant.clone(),
                predicate: self.predicate.clone(),
                query,
                hold: self.hold.clone(),
            },
            decrypt: kms.map(|k| (k, self.case_ref.as_deref().unwrap_or_default())),
            actor_named: self.who.actor.is_some(),
            file_bytes: self.file_mb.max(1) << 20,
            store_url: s.store.to_string(),
            failpoints: crate::hooks::Failpoints::from_env(),
        };
        let mut progress = progress_line();
        let report = export::run(&session, &req, &mut progress).await;
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!();
        }
        let report = report?;
        output::write_report(self.format.unwrap_or(Format::Table), &report, out)
    }
}

/// A progress line on stderr when it is a terminal, at most once a second.
fn progress_line() -> impl FnMut(export::Progress) + Send {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last = std::time::Instant::now();
    move |p: export::Progress| {
        if terminal && last.elapsed() >= std::time::Duration::from_secs(1) {
            last = std::time::Instant::now();
            eprint!("\rexported {} row(s) into {} file(s)", p.rows, p.files);
        }
    }
}

async fn verify(
    dir: &Path,
    store: Option<crate::storage::StoreUrl>,
    format: Option<Format>,
    out: &mut dyn Write,
) -> Result<()> {
    let (mut report, custody) = export::verify::check(dir)
        .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    // the trail: of the store given, or of the one custody.json names when it is here
    let url = store.or_else(|| custody.as_ref().and_then(export::recorded_store));
    if let (Some(u), Some(c), Some(sha)) = (&url, &custody, &report.custody_sha256) {
        let store = crate::store::open_unkeyed(u).await?;
        let problems = export::check_trail(&store, c, sha).await?;
        report.problems.extend(problems.iter().cloned());
        report.audit = Some(problems);
    }
    let shown = Shown {
        report: &report,
        store: url.map(|u| u.to_string()),
    };
    output::write_report(format.unwrap_or(Format::Table), &shown, out)?;
    if report.ok() {
        Ok(())
    } else {
        Err(Error::VerifyFailed(report.problems.len()))
    }
}

/// `export verify`'s report as printed.
#[derive(Debug, Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    report: &'a export::verify::Report,
    /// The store whose audit trail was checked.
    store: Option<String>,
}

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.report;
        if let Some(id) = &r.export_id {
            writeln!(
                f,
                "export {id}: {} file(s), {} row(s) checked",
                r.files, r.rows
            )?;
        }
        if let Some(sha) = &r.custody_sha256 {
            writeln!(f, "custody.json sha256 {sha}")?;
        }
        match (&r.audit, &self.store) {
            (Some(p), Some(s)) if p.is_empty() => writeln!(
                f,
                "audit trail of {s}: the started and completed entries match"
            )?,
            (Some(_), Some(s)) => writeln!(f, "audit trail of {s}: see the mismatches below")?,
            _ => writeln!(
                f,
                "audit trail NOT checked (no store reachable): custody.json itself is vouched for only by the trail; pass --store"
            )?,
        }
        for p in &r.problems {
            writeln!(f, "MISMATCH {p}")?;
        }
        write!(f, "{}", if r.ok() { "OK" } else { "FAILED" })
    }
}

impl std::fmt::Display for export::Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "export {} in {}: {} row(s), {} file(s), {} bytes{}",
            self.export_id,
            self.out.display(),
            self.rows,
            self.files,
            self.bytes,
            if self.decrypted {
                " (decrypted: files are 0600; the archive's encryption does not follow them)"
            } else {
                ""
            }
        )?;
        write!(f, "custody.json sha256 {}", self.custody_sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn export_runs_or_verifies() {
        let c = Cli::try_parse_from([
            "holdfast", "export", "--store", "d", "--target", "parquet", "--out", "o",
        ])
        .unwrap();
        match c.command {
            Command::Export(a) => assert!(a.run.target.is_some() && a.command.is_none()),
            _ => panic!(),
        }
        let c = Cli::try_parse_from(["holdfast", "export", "verify", "o"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Export(ExportArgs {
                command: Some(_),
                ..
            })
        ));
        let e = Cli::try_parse_from(["holdfast", "export", "--target", "parquet"]).unwrap_err();
        assert!(e.to_string().contains("--out"), "{e}");
    }
}
