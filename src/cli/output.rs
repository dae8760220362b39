//! Output formats for tables and reports. Errors never go to stdout.

use crate::error::{Error, Result};
use arrow::array::RecordBatch;
use std::io::{IsTerminal, Write};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text (default when stdout is a terminal)
    Table,
    Csv,
    /// One JSON array
    Json,
    /// One JSON object per line
    Ndjson,
}

impl Format {
    /// The explicit choice, else table on a terminal and `otherwise` elsewhere.
    pub fn resolve(choice: Option<Format>, otherwise: Format) -> Format {
        choice.unwrap_or(if std::io::stdout().is_terminal() { Format::Table } else { otherwise })
    }
}

fn out_err(e: impl std::fmt::Display) -> Error {
    Error::Query(crate::query::QueryError::Output(e.to_string()))
}

pub fn write_batches(format: Format, batches: &[RecordBatch], out: &mut dyn Write) -> Result<()> {
    match format {
        Format::Table => {
            let text = arrow::util::pretty::pretty_format_batches(batches).map_err(out_err)?;
            writeln!(out, "{text}").map_err(out_err)?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut *out);
            if batches.is_empty() {
                return Ok(());
            }
            for b in batches {
                w.write(b).map_err(out_err)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut *out);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs).map_err(out_err)?;
            w.finish().map_err(out_err)?;
            writeln!(out).map_err(out_err)?;
        }
        Format::Ndjson => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut *out);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs).map_err(out_err)?;
            w.finish().map_err(out_err)?;
        }
    }
    Ok(())
}

/// A report: its Display text for table, JSON otherwise.
pub fn write_report<T: serde::Serialize + std::fmt::Display>(format: Format, report: &T, out: &mut dyn Write) -> Result<()> {
    match format {
        Format::Table => writeln!(out, "{report}"),
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(report).expect("serializes")),
        Format::Csv | Format::Ndjson => writeln!(out, "{}", serde_json::to_string(report).expect("serializes")),
    }
    .map_err(out_err)
}
