//! Load scripts for the warehouses, generated from the export's Arrow schema, so that the
//! table definitions always match the files: Snowflake (`snowflake/`: file format, table,
//! stage templates, `COPY INTO` by column name, `load.sh`) and BigQuery (`bigquery/`:
//! `schema.json` as BigQuery's Parquet loader maps the files, `create_table.sql`, `load.sh`).

use arrow::datatypes::{DataType, Field, Schema};

/// Where an export is meant to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Snowflake,
    BigQuery,
    /// The Parquet files and the custody record only.
    Parquet,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Snowflake => "snowflake",
            Target::BigQuery => "bigquery",
            Target::Parquet => "parquet",
        }
    }
}

/// What the scripts need to know.
#[derive(Debug, Clone)]
pub struct Names<'a> {
    pub table: &'a str,
    pub export_id: &'a str,
}

/// The script files of a target: (path relative to the export, contents).
pub fn scripts(target: Target, schema: &Schema, n: &Names<'_>) -> Vec<(String, String)> {
    match target {
        Target::Snowflake => snowflake(schema, n),
        Target::BigQuery => bigquery(schema, n),
        Target::Parquet => Vec::new(),
    }
}

/// Snowflake's type for a column, as its Parquet loader with logical types produces it
/// (a UTC-adjusted microsecond timestamp is TIMESTAMP_LTZ; lists load into ARRAY).
fn snowflake_type(t: &DataType) -> &'static str {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 => "VARCHAR",
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP_LTZ",
        DataType::Timestamp(_, None) => "TIMESTAMP_NTZ",
        DataType::Int32 | DataType::Int64 => "NUMBER(19,0)",
        DataType::Boolean => "BOOLEAN",
        DataType::Binary | DataType::FixedSizeBinary(_) => "BINARY",
        DataType::List(_) => "ARRAY",
        _ => "VARIANT",
    }
}

const FORMAT_OPTIONS: &str = "TYPE = PARQUET BINARY_AS_TEXT = FALSE USE_LOGICAL_TYPE = TRUE";

/// The export's own Snowflake stage (one per export: its files never mix with another's).
fn stage_name(n: &Names<'_>) -> String {
    format!("holdfast_{}", n.export_id.replace('-', "_"))
}

fn snowflake(schema: &Schema, n: &Names<'_>) -> Vec<(String, String)> {
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            // ARRAY columns stay nullable: a loader that cannot read a nested column (fakesnow)
            // loads NULL rather than failing, and an empty list is no different to a reader
            let list = matches!(f.data_type(), DataType::List(_));
            let null = if f.is_nullable() || list {
                ""
            } else {
                " NOT NULL"
            };
            format!("  {} {}{null}", f.name(), snowflake_type(f.data_type()))
        })
        .collect();
    let table = format!(
        "-- the table this export loads into (types as Snowflake's Parquet loader gives them\n\
         -- with logical types: UTC timestamps arrive as TIMESTAMP_LTZ, lists as ARRAY)\n\
         CREATE TABLE IF NOT EXISTS {} (\n{}\n);\n",
        n.table,
        columns.join(",\n")
    );
    let format = format!(
        "-- holdfast writes zstd Parquet; strings are UTF8-annotated, binaries stay binary\n\
         CREATE FILE FORMAT IF NOT EXISTS holdfast_parquet {FORMAT_OPTIONS};\n"
    );
    let stage = format!(
        "-- To load from a bucket data/*.parquet was copied to, replace the statement below with an\n\
         -- external stage (a storage integration is an ACCOUNTADMIN task; give its name):\n\
         -- CREATE STAGE {s} URL = 's3://<bucket>/<prefix>/' STORAGE_INTEGRATION = <integration> FILE_FORMAT = holdfast_parquet;\n\
         -- CREATE STAGE {s} URL = 'gcs://<bucket>/<prefix>/' STORAGE_INTEGRATION = <integration> FILE_FORMAT = holdfast_parquet;\n\
         -- CREATE STAGE {s} URL = 'azure://<account>.blob.core.windows.net/<container>/<prefix>/' STORAGE_INTEGRATION = <integration> FILE_FORMAT = holdfast_parquet;\n\
         -- The export's own internal stage, which load.sh PUTs the files into (DROP STAGE {s} once loaded):\n\
         CREATE STAGE IF NOT EXISTS {s};\n",
        s = stage_name(n)
    );
    let copy = format!(
        "-- columns match by name; any error aborts the load (nothing partial is kept)\n\
         ALTER SESSION SET TIMEZONE = 'UTC';\n\
         COPY INTO {table}\n  FROM @{stage}\n  FILE_FORMAT = ({FORMAT_OPTIONS})\n  MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE\n  ON_ERROR = ABORT_STATEMENT;\n",
        table = n.table,
        stage = stage_name(n)
    );
    let load = snowflake_load(n);
    vec![
        ("snowflake/file_format.sql".into(), format),
        ("snowflake/create_table.sql".into(), table),
        ("snowflake/stage.sql".into(), stage),
        ("snowflake/copy_into.sql".into(), copy),
        ("snowflake/load.sh".into(), load),
    ]
}

fn snowflake_load(n: &Names<'_>) -> String {
    format!(
        r#"#!/bin/sh
# Loads this export into Snowflake: creates the file format, the internal stage and the
# table if missing, uploads the Parquet files (as they are: AUTO_COMPRESS = FALSE) and runs
# COPY INTO. Check the export first: holdfast export verify "$(dirname "$0")/..".
# With SnowSQL on PATH it uses it (connection: SNOWSQL_CONNECTION names one of
# ~/.snowsql/config, or SnowSQL's own SNOWSQL_* variables); otherwise the Python connector
# (pip install snowflake-connector-python) with SNOWFLAKE_ACCOUNT, SNOWFLAKE_USER,
# SNOWFLAKE_PASSWORD (or SNOWFLAKE_AUTHENTICATOR), SNOWFLAKE_WAREHOUSE, SNOWFLAKE_DATABASE,
# SNOWFLAKE_SCHEMA, and SNOWFLAKE_HOST/SNOWFLAKE_PORT/SNOWFLAKE_PROTOCOL where needed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
data=$(cd "$here/../data" && pwd)
put="PUT 'file://$data/*.parquet' @{stage} AUTO_COMPRESS = FALSE OVERWRITE = TRUE"
if command -v snowsql >/dev/null 2>&1; then
  run() {{ snowsql ${{SNOWSQL_CONNECTION:+-c "$SNOWSQL_CONNECTION"}} -o exit_on_error=true -o friendly=false "$@"; }}
  run -f "$here/file_format.sql"
  run -f "$here/stage.sql"
  run -f "$here/create_table.sql"
  run -q "$put"
  run -f "$here/copy_into.sql"
else
  PYTHON=${{PYTHON:-python3}}
  "$PYTHON" - "$here" "$put" <<'PY'
import json, os, sys
import snowflake.connector
here, put = sys.argv[1], sys.argv[2]
keys = ["account", "user", "password", "authenticator", "warehouse", "database", "schema", "host", "port", "protocol", "role"]
kw = {{k: os.environ["SNOWFLAKE_" + k.upper()] for k in keys if os.environ.get("SNOWFLAKE_" + k.upper())}}
extra = os.environ.get("SNOWFLAKE_SESSION_PARAMETERS")
if extra:
    kw["session_parameters"] = json.loads(extra)
with snowflake.connector.connect(**kw) as conn:
    cur = conn.cursor()
    def script(name):
        for stmt in conn.execute_string(open(os.path.join(here, name)).read()):
            pass
    script("file_format.sql")
    script("stage.sql")
    script("create_table.sql")
    cur.execute(put)
    script("copy_into.sql")
    print("loaded:", cur.execute("SELECT count(*) FROM {table}").fetchone()[0], "rows in {table}")
PY
fi
"#,
        stage = stage_name(n),
        table = n.table
    )
}

/// BigQuery's type for a Parquet column written from this Arrow type, as its Parquet loader
/// maps it (with `--parquet_enable_list_inference`, a LIST is REPEATED).
fn bigquery_field(f: &Field) -> serde_json::Value {
    let mode = if f.is_nullable() {
        "NULLABLE"
    } else {
        "REQUIRED"
    };
    let (t, mode, fields) = match f.data_type() {
        DataType::List(child) => {
            let inner = bigquery_field(child);
            let t = inner["type"].clone();
            let fields = inner.get("fields").cloned();
            (t, "REPEATED", fields)
        }
        DataType::Struct(children) => (
            "RECORD".into(),
            mode,
            Some(children.iter().map(|c| bigquery_field(c)).collect()),
        ),
        DataType::Utf8 | DataType::LargeUtf8 => ("STRING".into(), mode, None),
        DataType::Timestamp(..) => ("TIMESTAMP".into(), mode, None),
        DataType::Int32 | DataType::Int64 => ("INTEGER".into(), mode, None),
        DataType::Boolean => ("BOOLEAN".into(), mode, None),
        DataType::Float64 => ("FLOAT".into(), mode, None),
        _ => ("BYTES".into(), mode, None),
    };
    let mut v = serde_json::json!({"name": f.name(), "type": t, "mode": mode});
    if let Some(fields) = fields {
        v["fields"] = fields;
    }
    v
}

fn bigquery_sql_type(v: &serde_json::Value) -> String {
    let t = v["type"].as_str().unwrap_or("STRING");
    let base = if t == "RECORD" {
        let inner: Vec<String> = v["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "{} {}",
                    c["name"].as_str().unwrap_or(""),
                    bigquery_sql_type(c)
                )
            })
            .collect();
        format!("STRUCT<{}>", inner.join(", "))
    } else if t == "INTEGER" {
        "INT64".into()
    } else if t == "FLOAT" {
        "FLOAT64".into()
    } else {
        t.to_string()
    };
    match v["mode"].as_str() {
        Some("REPEATED") => format!("ARRAY<{base}>"),
        Some("REQUIRED") => format!("{base} NOT NULL"),
        _ => base,
    }
}

fn bigquery(schema: &Schema, n: &Names<'_>) -> Vec<(String, String)> {
    let fields: Vec<serde_json::Value> =
        schema.fields().iter().map(|f| bigquery_field(f)).collect();
    let mut json = serde_json::to_string_pretty(&fields).expect("schema serializes");
    json.push('\n');
    let columns: Vec<String> = fields
        .iter()
        .map(|f| {
            format!(
                "  {} {}",
                f["name"].as_str().unwrap_or(""),
                bigquery_sql_type(f)
            )
        })
        .collect();
    let table = format!(
        "-- replace DATASET; partitioned by day of occurred_at, clustered by tenant\n\
         CREATE TABLE IF NOT EXISTS `DATASET.{}` (\n{}\n)\nPARTITION BY DATE(occurred_at)\nCLUSTER BY tenant_id, interaction_type;\n",
        n.table,
        columns.join(",\n")
    );
    let load = format!(
        r#"#!/bin/sh
# Loads this export into BigQuery: copies the Parquet files to GCS and runs bq load with
# list inference (agent_ids and participants become REPEATED columns) against schema.json.
# Check the export first: holdfast export verify "$(dirname "$0")/..".
# Needs the Google Cloud SDK (gcloud storage, bq), and BQ_DATASET (dataset, or
# project:dataset) and GCS_PREFIX (gs://bucket/prefix, in the dataset's location).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
: "${{BQ_DATASET:?set BQ_DATASET (dataset or project:dataset)}}"
: "${{GCS_PREFIX:?set GCS_PREFIX (gs://bucket/prefix)}}"
gcloud storage cp "$here"/../data/*.parquet "$GCS_PREFIX/{id}/"
bq load --source_format=PARQUET --parquet_enable_list_inference=true \
  --time_partitioning_field=occurred_at --time_partitioning_type=DAY \
  --clustering_fields=tenant_id,interaction_type \
  "$BQ_DATASET.{table}" "$GCS_PREFIX/{id}/*.parquet" "$here/schema.json"
"#,
        id = n.export_id,
        table = n.table
    );
    vec![
        ("bigquery/schema.json".into(), json),
        ("bigquery/create_table.sql".into(), table),
        ("bigquery/load.sh".into(), load),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bigquery_maps_lists_of_structs_to_repeated_records() {
        let schema = super::super::columns::PRODUCTION.clone();
        let files = scripts(
            Target::BigQuery,
            &schema,
            &Names {
                table: "t",
                export_id: "x",
            },
        );
        let json: serde_json::Value = serde_json::from_str(&files[0].1).unwrap();
        let by = |n: &str| {
            json.as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == n)
                .unwrap()
                .clone()
        };
        assert_eq!(by("agent_ids")["mode"], "REPEATED");
        assert_eq!(by("agent_ids")["type"], "STRING");
        assert_eq!(by("participants")["type"], "RECORD");
        assert_eq!(by("participants")["fields"][3]["type"], "TIMESTAMP");
        assert_eq!(by("event_id")["mode"], "REQUIRED");
        assert!(
            files[1]
                .1
                .contains("participants ARRAY<STRUCT<participant_id STRING")
        );
    }
}
