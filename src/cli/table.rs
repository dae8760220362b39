//! `table`: the store's committed set as a Delta Lake table (`_delta_log` at the store's root).

use super::*;
use crate::lake::table::{self, ddl::Engine};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum EngineArg {
    Snowflake,
    Bigquery,
    Athena,
    Trino,
    Spark,
    Duckdb,
}

impl From<EngineArg> for Engine {
    fn from(e: EngineArg) -> Self {
        match e {
            EngineArg::Snowflake => Engine::Snowflake,
            EngineArg::Bigquery => Engine::BigQuery,
            EngineArg::Athena => Engine::Athena,
            EngineArg::Trino => Engine::Trino,
            EngineArg::Spark => Engine::Spark,
            EngineArg::Duckdb => Engine::DuckDb,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TableCommand {
    /// Write the Delta log again from the signed heads and the manifests (audited)
    #[command(after_help = "Example:\n  holdfast table rebuild --store data")]
    Rebuild {
        #[command(flatten)]
        s: StoreArgs,
        #[command(flatten)]
        who: ActorArg,
    },
    /// Print the statements that register the table in an engine, at the store's root
    #[command(after_help = "Example:\n  holdfast table ddl --store data --engine athena")]
    Ddl {
        #[command(flatten)]
        s: StoreArgs,
        /// The engine to register the table in
        #[arg(long, value_enum)]
        engine: EngineArg,
        /// The table's name in that engine
        #[arg(long, default_value = "holdfast_events")]
        name: String,
    },
}

/// The log was rebuilt.
#[derive(Debug, Serialize)]
struct Rebuilt {
    versions: usize,
}
impl crate::audit::AuditEvent for Rebuilt {
    const ACTION: &'static str = "table.rebuild";
}

impl TableCommand {
    pub(super) async fn run(self, clock: Arc<dyn Clock>, out: &mut dyn Write) -> Result<()> {
        match self {
            TableCommand::Rebuild { s, who } => {
                let store = crate::store::open_unkeyed(&s.store).await?;
                let session = session(&store, clock, &who).await?;
                let versions = table::rebuild(&store).await?;
                session.record(None, &Rebuilt { versions }).await?;
                writeln!(
                    out,
                    "rebuilt _delta_log: {versions} version(s) from the signed heads and manifests"
                )
                .map_err(|e| Error::io("writing the report", e))
            }
            TableCommand::Ddl { s, engine, name } => {
                if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.is_empty() {
                    return Err(Error::Usage(format!(
                        "--name {name:?}: letters, digits and _ only"
                    )));
                }
                crate::store::open_unkeyed(&s.store).await?;
                let root = match s.store.local_dir() {
                    Some(d) => std::path::absolute(d)
                        .map_err(|e| Error::io("resolving the store's directory", e))?
                        .display()
                        .to_string(),
                    None => s.store.to_string(),
                };
                write!(out, "{}", table::ddl::ddl(engine.into(), &root, &name))
                    .map_err(|e| Error::io("writing the statements", e))
            }
        }
    }
}
