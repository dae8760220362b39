//! `query` and `sql`: read-only SQL, with the audited decryption gate.

use super::*;

/// Run SQL over `events`, `interactions`, `manifests` and `audit` (and, with --decrypt, `decrypted`)
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub s: StoreArgs,
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
                &std::fs::read_to_string(f)
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
        let batches = execute(&s, &gate, &sql, &clock).await?;
        match target {
            Some(path) => {
                let mut f = std::io::BufWriter::new(
                    std::fs::File::create(&path)
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
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("holdfast").join("sql_history"))
}

pub(super) async fn run_statement(
    s: &StoreArgs,
    gate: &Gate,
    sql: &str,
    clock: &Arc<dyn Clock>,
    format: Format,
    out: &mut dyn Write,
) {
    match execute(s, gate, sql, clock).await {
        Ok(batches) => {
            if let Err(e) = output::write_batches(format, &batches, out) {
                eprintln!("error: {}", e.report());
            }
        }
        Err(e) => eprintln!("error: {}", e.report()),
    }
    let _ = out.flush();
}

/// `holdfast sql`: statements end with `;`. History keeps statements as the audit trail
/// records them (blind-index addresses redacted).
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
        for stmt in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            run_statement(s, gate, stmt, clock, format, out).await;
        }
        return Ok(());
    }
    let mut editor = rustyline::DefaultEditor::new()
        .map_err(|e| Error::Usage(format!("cannot start the line editor: {e}")))?;
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let _ = writeln!(
        out,
        "holdfast SQL on {} (tables: events, interactions, manifests, audit{}); end statements with ;  \\q quits",
        s.store.display(),
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
        if let Some(end) = buf.rfind(';') {
            let stmt = buf[..end].trim().to_string();
            buf.clear();
            if stmt.is_empty() {
                continue;
            }
            let _ = editor.add_history_entry(crate::audit::recorded_query(&stmt));
            run_statement(s, gate, &stmt, clock, format, out).await;
        }
    }
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(h);
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
        let (store, kms) = open(s).await?;
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
    let store = Store::open_local(&s.store, false)?;
    read_marker(&store).await?;
    let (ctx, _) =
        crate::query::session_with(&store, None, crate::query::mentions_audit(sql)).await?;
    Ok(crate::query::run_sql(&ctx, sql).await?)
}
