//! `query` and `sql`: read-only SQL, with the audited decryption gate.

use super::*;

/// Run SQL over `events`, `interactions`, `manifests` and `audit` (and, with --decrypt, `decrypted`)
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub s: StoreArgs,
    /// Output format
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Write the result here instead of stdout
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// A named query from sql/ (its header comment lists its parameters)
    #[arg(long, conflicts_with = "sql")]
    pub file: Option<PathBuf>,
    /// name=value for a --file query's {{name}} placeholders (bound as SQL string literals)
    #[arg(long = "param", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    #[command(flatten)]
    pub gate: Gate,
    /// The SQL statement (read-only); or --file
    #[arg(required_unless_present = "file")]
    pub sql: Option<String>,
}

impl QueryArgs {
    pub(super) async fn run(self, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        let QueryArgs {
            s,
            format,
            output: target,
            file,
            params,
            gate,
            sql,
        } = self;
        let sql = match (&file, sql) {
            (Some(f), _) => crate::query::named::bind(
                &files::read_to_string(f)
                    .map_err(|e| Error::io(format!("reading {}", f.display()), e))?,
                &params,
            )
            .map_err(Error::Usage)?,
            (None, Some(q)) => q,
            (None, None) => return Err(Error::Usage("give SQL or --file".into())),
        };
        let format = Format::resolve(format, Format::Csv);
        if format == Format::Parquet
            && target.is_none()
            && std::io::IsTerminal::is_terminal(&std::io::stdout())
        {
            return Err(Error::Usage(
                "Parquet is not for a terminal: add -o FILE".into(),
            ));
        }
        let batches = execute(&s, &gate, &sql, &clock)
            .await
            .map_err(|e| scrubbed(e, &gate, &sql))?;
        match target {
            Some(path) => {
                let mut f = std::io::BufWriter::new(
                    files::create(&path)
                        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?,
                );
                output::write_batches(format, &batches, &mut f)?;
                f.flush()
                    .map_err(|e| Error::io(format!("writing {}", path.display()), e))
            }
            None => output::write_batches(format, &batches, out),
        }
    }
}

/// Interactive SQL shell with history; statements end with `;`, `\q` quits. Reads
/// statements from stdin when it is not a terminal.
#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    #[command(flatten)]
    pub s: StoreArgs,
    #[command(flatten)]
    pub gate: Gate,
    /// Output format
    #[arg(long, value_enum)]
    pub format: Option<Format>,
}

impl SqlArgs {
    pub(super) async fn run(self, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        let SqlArgs { s, gate, format } = self;
        shell(&s, &gate, &clock, format.unwrap_or(Format::Table), out).await
    }
}

pub(super) fn parse_param(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not name=value"))
}

pub(super) fn history_path() -> Option<PathBuf> {
    let base = files::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| files::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("holdfast").join("sql_history"))
}

/// With decryption enabled, an error printed to the terminal loses the values of the
/// statement (DataFusion's messages quote them); without it, the user sees their own
/// statement's values as DataFusion reports them.
fn scrubbed(e: Error, gate: &Gate, sql: &str) -> Error {
    if !gate.decrypt {
        return e;
    }
    let report = e.report();
    let clean = crate::query::redact::Redactor::unkeyed().message(&report, sql);
    if clean == report {
        e
    } else {
        Error::Query(crate::query::QueryError::Output(clean))
    }
}

/// Runs one statement of the shell and prints its result or its error; whether it succeeded.
pub(super) async fn run_statement(
    s: &StoreArgs,
    gate: &Gate,
    sql: &str,
    clock: &Arc<dyn Clock>,
    format: Format,
    out: &mut dyn Write,
) -> bool {
    let ok = match execute(s, gate, sql, clock).await {
        Ok(batches) => match output::write_batches(format, &batches, out) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("error: {}", e.report());
                false
            }
        },
        Err(e) => {
            eprintln!("error: {}", scrubbed(e, gate, sql).report());
            false
        }
    };
    let _ = out.flush();
    ok
}

/// `holdfast sql`: statements end with `;` (the SQL tokenizer finds them, so a `;` in a string
/// or a comment does not end one). Reading a script from stdin, every statement runs and the
/// exit code is 1 when any failed. History keeps statements as the audit trail records them
/// (literals replaced by keyed hashes, comments dropped) in a file only its owner can read.
pub(super) async fn shell(
    s: &StoreArgs,
    gate: &Gate,
    clock: &Arc<dyn Clock>,
    format: Format,
    out: &mut dyn Write,
) -> Result<()> {
    use std::io::{IsTerminal, Read};
    if !std::io::stdin().is_terminal() {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Error::io("reading stdin", e))?;
        return run_script(s, gate, clock, format, &text, out).await;
    }
    let mut editor = rustyline::DefaultEditor::new()
        .map_err(|e| Error::Unusable(format!("cannot start the line editor: {e}")))?;
    let redactor = history_redactor(s).await;
    let history = history_path();
    if let Some(h) = &history {
        load_history(&mut editor, h, &redactor);
    }
    let _ = writeln!(
        out,
        "holdfast SQL on {} (tables: events, interactions, manifests, audit{}); end statements with ;  \\q quits",
        s.store,
        if gate.decrypt { ", decrypted" } else { "" }
    );
    let _ = out.flush();
    let mut buf = String::new();
    loop {
        let prompt = if buf.is_empty() {
            "holdfast> "
        } else {
            "       -> "
        };
        let line = match editor.readline(prompt) {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                buf.clear();
                continue;
            }
            Err(_) => break,
        };
        if buf.is_empty() && line.trim() == "\\q" {
            break;
        }
        buf.push_str(&line);
        buf.push('\n');
        // an unterminated string or comment: read on
        let Ok(split) = crate::query::statement::split(&buf) else {
            continue;
        };
        buf = split.rest;
        for stmt in split.statements {
            let _ = editor.add_history_entry(redactor.statement(&stmt));
            run_statement(s, gate, &stmt, clock, format, out).await;
        }
    }
    if let Some(h) = &history
        && let Err(e) = save_history(&mut editor, h)
    {
        eprintln!(
            "warning: the SQL history was not saved to {}: {e}",
            h.display()
        );
    }
    Ok(())
}

/// A script's statements, all run; fails when any failed (or the script cannot be cut into
/// statements, when none runs).
async fn run_script(
    s: &StoreArgs,
    gate: &Gate,
    clock: &Arc<dyn Clock>,
    format: Format,
    text: &str,
    out: &mut dyn Write,
) -> Result<()> {
    let split = crate::query::statement::split(text).map_err(|e| {
        crate::query::QueryError::Output(format!(
            "cannot cut the input into statements (nothing was run): {e}"
        ))
    })?;
    let mut statements = split.statements;
    if !split.rest.trim().is_empty() {
        statements.push(split.rest.trim().to_string());
    }
    let mut failed = 0;
    for stmt in &statements {
        if !run_statement(s, gate, stmt, clock, format, out).await {
            failed += 1;
        }
    }
    match failed {
        0 => Ok(()),
        _ => Err(crate::query::QueryError::StatementsFailed {
            failed,
            total: statements.len(),
        }
        .into()),
    }
}

/// The history's redactor: keyed like the audit trail's when the store's keyring opens,
/// else one that replaces literals without hashes.
async fn history_redactor(s: &StoreArgs) -> crate::query::redact::Redactor {
    use crate::query::redact::Redactor;
    match open(s).await {
        Ok((_, kms)) => Redactor::from_kms(kms.as_ref())
            .await
            .unwrap_or_else(|_| Redactor::unkeyed()),
        Err(_) => Redactor::unkeyed(),
    }
}

/// Loads the history, redacting every entry (a history written before redaction loses its
/// literals at the next save).
fn load_history(
    editor: &mut rustyline::DefaultEditor,
    path: &Path,
    redactor: &crate::query::redact::Redactor,
) {
    if editor.load_history(path).is_err() {
        return;
    }
    let entries: Vec<String> = editor
        .history()
        .iter()
        .map(|e| redactor.statement(e))
        .collect();
    let _ = editor.clear_history();
    for e in entries {
        let _ = editor.add_history_entry(e);
    }
}

/// Saves the history readable by its owner only (file 0600, its directory 0700).
fn save_history(editor: &mut rustyline::DefaultEditor, path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        files::private_dir(dir)?;
    }
    editor
        .save_history(path)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    if path.exists() {
        files::owner_only(path)?;
    }
    Ok(())
}

/// Whether and for whom a query may decrypt (flags shared by `query` and `sql`).
#[derive(Debug, clap::Args, Clone)]
pub struct Gate {
    /// Enable decrypt_payload(), blind_index() and the `decrypted` view; needs --case and the investigator role; audited
    #[arg(long)]
    decrypt: bool,
    /// Case reference the decryption is for
    #[arg(long = "case")]
    case_ref: Option<String>,
    #[command(flatten)]
    who: ActorArg,
    /// Tenant for the one-argument blind_index(address)
    #[arg(long)]
    tenant: Option<String>,
    /// The store and key service, opened at the first decrypting statement and kept for the
    /// session: a `sql` session asks the key service once per DEK (its cache), not once per
    /// statement.
    #[arg(skip)]
    keys: tokio::sync::OnceCell<(Store, Arc<dyn Kms>)>,
}

/// Runs one statement; with the gate open, through the library's decryption gate (role,
/// case and tenants from the store's policy; audited, refusals and failures too; errors
/// that could quote decrypted values replaced).
pub(super) async fn execute(
    s: &StoreArgs,
    gate: &Gate,
    sql: &str,
    clock: &Arc<dyn Clock>,
) -> Result<Vec<arrow::array::RecordBatch>> {
    if gate.decrypt {
        let (store, kms) = gate.keys.get_or_try_init(|| open(s)).await?.clone();
        let session = session(&store, clock.clone(), &gate.who).await?;
        let batches = crate::access::gate::query(
            &session,
            kms,
            gate.case_ref.as_deref(),
            gate.tenant.as_deref(),
            sql,
        )
        .await?;
        return Ok(batches);
    }
    let store = crate::store::open_unkeyed(&s.store).await?;
    let latest = committed(&store).await?;
    Ok(crate::query::read(&store, latest, sql).await?)
}

/// The latest manifests (through the store's catalog). A partition whose latest version cannot
/// be read is left out of the session, with a warning on stderr, so one damaged partition does
/// not stop every query.
async fn committed(store: &Store) -> Result<Vec<crate::lake::manifest::Loaded>> {
    let (loaded, damaged) = crate::lake::catalog::load_latest_each(store).await?;
    for d in &damaged {
        eprintln!(
            "warning: partition {} is left out: its latest manifest (v{}) cannot be read ({}); run `holdfast verify`",
            d.partition, d.sequence, d.problem
        );
    }
    Ok(loaded)
}
