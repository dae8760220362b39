//! `holdfast table ddl`: the statements that register the store's Delta table in an engine.
//! Every engine reads the log (`_delta_log`), never a glob of the folders, so it sees
//! exactly the committed files. What a user must fill in (stage, connection, credentials) is
//! written as `<placeholder>` with a comment.

use super::SCHEMA;
use arrow::datatypes::DataType;

/// The engines `table ddl` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Snowflake,
    BigQuery,
    Athena,
    Trino,
    Spark,
    DuckDb,
}

impl Engine {
    pub const ALL: [Engine; 6] = [
        Engine::Snowflake,
        Engine::BigQuery,
        Engine::Athena,
        Engine::Trino,
        Engine::Spark,
        Engine::DuckDb,
    ];
}

/// The columns an analyst queries (the ciphertext and key columns are left to holdfast).
fn columns() -> Vec<(&'static str, &'static DataType)> {
    SCHEMA
        .fields()
        .iter()
        .filter(|f| !matches!(f.name().as_str(), "payload" | "dek_id" | "address_hmacs"))
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect()
}

fn snowflake_type(t: &DataType) -> &'static str {
    match t {
        DataType::Utf8 => "VARCHAR",
        DataType::Timestamp(..) => "TIMESTAMP_LTZ",
        DataType::List(_) => "ARRAY",
        _ => "BINARY",
    }
}

fn snowflake(root: &str, table: &str) -> String {
    let mut cols: Vec<String> = columns()
        .iter()
        .map(|(n, t)| {
            let ty = snowflake_type(t);
            format!("  {n} {ty} AS (value:{n}::{ty})")
        })
        .collect();
    cols.push("  year NUMBER AS (value:year::NUMBER)".into());
    cols.push("  month NUMBER AS (value:month::NUMBER)".into());
    cols.push("  day NUMBER AS (value:day::NUMBER)".into());
    cols.push("  interaction_type VARCHAR AS (value:interaction_type::VARCHAR)".into());
    format!(
        "-- Snowflake: an external table that reads the Delta log (TABLE_FORMAT = DELTA), not a glob.\n\
         -- Fill in <storage_integration> (an ACCOUNTADMIN creates it for the bucket).\n\
         CREATE STAGE IF NOT EXISTS holdfast_store\n  URL = '{root}'\n  STORAGE_INTEGRATION = <storage_integration>;\n\
         CREATE OR REPLACE EXTERNAL TABLE {table} (\n{}\n)\n  PARTITION BY (year, month, day, interaction_type)\n  LOCATION = @holdfast_store\n  FILE_FORMAT = (TYPE = PARQUET BINARY_AS_TEXT = FALSE)\n  TABLE_FORMAT = DELTA\n  AUTO_REFRESH = FALSE\n  REFRESH_ON_CREATE = TRUE;\n\
         -- Delta external tables do not refresh themselves: after each holdfast batch or sweep,\n\
         ALTER EXTERNAL TABLE {table} REFRESH;\n",
        cols.join(",\n")
    )
}

/// Writes the statements for `engine` over the table at `root` (the store's root, as a URL
/// the engine reaches).
pub fn ddl(engine: Engine, root: &str, table: &str) -> String {
    let root = if root.ends_with('/') {
        root.to_string()
    } else {
        format!("{root}/")
    };
    let bare = root.trim_end_matches('/');
    match engine {
        Engine::Snowflake => snowflake(&root, table),
        Engine::BigQuery => format!(
            "-- BigQuery: a BigLake table in Delta Lake format. The files must be in Cloud Storage (or, through\n\
             -- BigQuery Omni, in S3 with an AWS connection). Fill in <project>, <dataset> and <connection>.\n\
             CREATE EXTERNAL TABLE `<project>.<dataset>.{table}`\n  WITH CONNECTION `<project>.<region>.<connection>`\n  OPTIONS (format = 'DELTA_LAKE', uris = ['{bare}']);\n"
        ),
        Engine::Athena => format!(
            "-- Athena: Delta Lake tables are read through the log; the schema comes from it.\n\
             CREATE EXTERNAL TABLE {table}\n  LOCATION '{root}'\n  TBLPROPERTIES ('table_type' = 'DELTA');\n"
        ),
        Engine::Trino => format!(
            "-- Trino: the Delta Lake connector (catalog `delta` here, with\n\
             -- delta.register-table-procedure.enabled=true) registers the table in place.\n\
             CALL delta.system.register_table(schema_name => 'holdfast', table_name => '{table}', table_location => '{bare}');\n"
        ),
        Engine::Spark => format!(
            "-- Spark with Delta Lake (delta-spark); use s3a:// for S3 with hadoop-aws.\n\
             CREATE TABLE IF NOT EXISTS {table} USING DELTA LOCATION '{}';\n",
            bare.replacen("s3://", "s3a://", 1)
        ),
        Engine::DuckDb => format!(
            "-- DuckDB with its delta extension (INSTALL delta; LOAD delta;); S3 needs a secret.\n\
             CREATE VIEW {table} AS SELECT * FROM delta_scan('{bare}');\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_reads_the_log_at_the_table_root() {
        for e in Engine::ALL {
            let s = ddl(e, "s3://bucket/store", "events");
            assert!(s.contains("bucket/store"), "{e:?}: {s}");
            assert!(
                !s.contains("*.parquet") && !s.contains("**"),
                "{e:?} globs: {s}"
            );
        }
        let s = ddl(Engine::Snowflake, "s3://b/s", "events");
        assert!(s.contains("TABLE_FORMAT = DELTA") && s.contains("BINARY_AS_TEXT = FALSE"));
        assert!(
            s.contains("  record_hash BINARY AS (value:record_hash::BINARY)"),
            "{s}"
        );
        assert!(!s.contains("payload"));
        assert!(ddl(Engine::Spark, "s3://b/s", "t").contains("'s3a://b/s'"));
    }
}

#[cfg(test)]
mod readme {
    use super::*;

    #[test]
    #[ignore = "writes the README's DDL block to target/ddl.sql, to paste"]
    fn write_the_readme_block() {
        let all: Vec<String> = Engine::ALL
            .iter()
            .map(|e| ddl(*e, "s3://firm-archive/holdfast", "holdfast_events"))
            .collect();
        #[allow(clippy::disallowed_methods)] // a file for the developer, in target/
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/target/ddl.sql"),
            all.join("\n"),
        )
        .unwrap();
    }

    /// The README shows what `table ddl` prints for a store in S3; this keeps it true.
    #[test]
    fn the_readme_shows_what_table_ddl_prints() {
        let readme = include_str!("../../../README.md");
        for e in Engine::ALL {
            let text = ddl(e, "s3://firm-archive/holdfast", "holdfast_events");
            assert!(
                readme.contains(&text),
                "README lacks the {e:?} DDL:\n{text}"
            );
        }
    }
}
