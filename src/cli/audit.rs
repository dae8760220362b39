//! `audit`: the trail.

use super::*;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the whole chain; exit 1 at the first broken link, naming it
    #[command(after_help = "Example:\n  holdfast audit verify --store data")]
    Verify {
        #[command(flatten)]
        s: StoreArgs,
        /// How far an entry's time may lie before an earlier entry's (clocks of several
        /// writers differ a little); more breaks the chain
        #[arg(long, default_value_t = 300)]
        max_skew_seconds: u32,
        /// Output format
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// List entries
    #[command(after_help = "Example:\n  holdfast audit list --store data --action decrypt")]
    List {
        #[command(flatten)]
        s: StoreArgs,
        /// Only entries at or after this time (RFC 3339)
        #[arg(long)]
        since: Option<String>,
        /// Only this action (decrypt, decrypt.refused, quarantine.show, …)
        #[arg(long)]
        action: Option<String>,
        /// Output format
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Print the sequence and hash of the newest entry, to record outside the system
    #[command(after_help = "Example:\n  holdfast audit head --store data")]
    Head {
        #[command(flatten)]
        s: StoreArgs,
    },
}

pub(super) async fn audit_command(
    command: AuditCommand,
    clock: Arc<dyn Clock>,
    out: &mut dyn Write,
) -> Result<()> {
    let open_store = |s: &StoreArgs| -> Result<Store> { Ok(Store::open(&s.store, false)?) };
    match command {
        AuditCommand::Verify {
            s,
            max_skew_seconds,
            format,
        } => {
            let store = open_store(&s)?;
            read_marker(&store).await?;
            let report = crate::audit::Audit::new(store, clock)
                .verify(chrono::Duration::seconds(max_skew_seconds.into()))
                .await?;
            output::write_report(format.unwrap_or(Format::Table), &report, out)?;
            match report.broken {
                Some(p) => Err(Error::AuditBroken(p.object)),
                None => Ok(()),
            }
        }
        AuditCommand::Head { s } => {
            let store = open_store(&s)?;
            read_marker(&store).await?;
            let head = crate::audit::Audit::new(store, clock).head().await?;
            let _ = writeln!(out, "{head}");
            Ok(())
        }
        AuditCommand::List {
            s,
            since,
            action,
            format,
        } => {
            let store = open_store(&s)?;
            read_marker(&store).await?;
            let since = since
                .map(|t| {
                    chrono::DateTime::parse_from_rfc3339(&t)
                        .map(|t| t.to_utc())
                        .map_err(|e| Error::Usage(format!("--since: {e}")))
                })
                .transpose()?;
            let entries = crate::audit::Audit::new(store, clock).entries().await?;
            let rows: Vec<_> = entries
                .into_iter()
                .filter(|(e, _)| {
                    since.is_none_or(|t| e.at >= t)
                        && action.as_ref().is_none_or(|a| &e.action == a)
                })
                .collect();
            let batch = crate::query::audit_batch(&rows)?;
            output::write_batches(Format::resolve(format, Format::Csv), &[batch], out)
        }
    }
}
