//! Output formats for tables and reports. Errors never go to stdout.

use crate::error::{Error, Result};
use arrow::array::{Array, RecordBatch};
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
    /// Parquet (to a file: -o)
    Parquet,
}

impl Format {
    /// The explicit choice, else table on a terminal and `otherwise` elsewhere.
    pub fn resolve(choice: Option<Format>, otherwise: Format) -> Format {
        choice.unwrap_or(if std::io::stdout().is_terminal() {
            Format::Table
        } else {
            otherwise
        })
    }
}

fn out_err(e: impl std::fmt::Display) -> Error {
    Error::Query(crate::query::QueryError::Output(e.to_string()))
}

/// Writes a result. An empty result still carries its schema in its (empty) batch: CSV writes
/// the header, Parquet a valid file with no rows, the table its header and `0 rows`.
pub fn write_batches(format: Format, batches: &[RecordBatch], out: &mut dyn Write) -> Result<()> {
    match format {
        Format::Table => {
            writeln!(out, "{}", table(batches, terminal_width())?).map_err(out_err)?;
            if batches.iter().all(|b| b.num_rows() == 0) {
                writeln!(out, "0 rows").map_err(out_err)?;
            }
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            for b in batches {
                w.write(&flatten_nested(b)?).map_err(out_err)?;
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
        Format::Parquet => {
            let Some(first) = batches.first() else {
                return Err(out_err(
                    "a result without a schema cannot be written as Parquet",
                ));
            };
            let mut buf = Vec::new();
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, first.schema(), None)
                .map_err(out_err)?;
            for b in batches {
                w.write(b).map_err(out_err)?;
            }
            w.close().map_err(out_err)?;
            out.write_all(&buf).map_err(out_err)?;
        }
    }
    Ok(())
}

/// A report: its Display text for table, JSON otherwise.
pub fn write_report<T: serde::Serialize + std::fmt::Display>(
    format: Format,
    report: &T,
    out: &mut dyn Write,
) -> Result<()> {
    match format {
        Format::Table => writeln!(out, "{report}").map_err(out_err),
        // through a Value only to add the request count (its keys come out sorted)
        _ if crate::storage::s3::requests() > 0 => write_json(
            format,
            &serde_json::to_value(report).expect("serializes"),
            out,
        ),
        Format::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(report).expect("serializes")
        )
        .map_err(out_err),
        _ => writeln!(
            out,
            "{}",
            serde_json::to_string(report).expect("serializes")
        )
        .map_err(out_err),
    }
}

/// One JSON document, for a machine `--format`: pretty for `json`, one line otherwise. A
/// command that reached S3 adds `s3_requests` to an object (the requests this process sent).
pub fn write_json(format: Format, doc: &serde_json::Value, out: &mut dyn Write) -> Result<()> {
    let requests = crate::storage::s3::requests();
    let mut doc = std::borrow::Cow::Borrowed(doc);
    if requests > 0
        && let serde_json::Value::Object(o) = doc.to_mut()
    {
        o.insert("s3_requests".into(), requests.into());
    }
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&*doc),
        _ => serde_json::to_string(&*doc),
    };
    writeln!(out, "{}", text.expect("serializes")).map_err(out_err)
}

/// The terminal's width in columns, when stdout is one.
pub fn terminal_width() -> Option<u16> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we pass.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some(ws.ws_col)
}

/// An aligned table; with a width, cells wrap so that the table fits it.
pub fn table(batches: &[RecordBatch], width: Option<u16>) -> Result<String> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    use comfy_table::{ContentArrangement, Table};
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::ASCII_FULL_CONDENSED);
    if let Some(first) = batches.first() {
        t.set_header(first.schema().fields().iter().map(|f| f.name().clone()));
    }
    let opts = FormatOptions::default().with_null("");
    for b in batches {
        let fmts: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<std::result::Result<_, _>>()
            .map_err(out_err)?;
        for row in 0..b.num_rows() {
            t.add_row(fmts.iter().map(|f| f.value(row).to_string()));
        }
    }
    if let Some(w) = width {
        t.set_content_arrangement(ContentArrangement::Dynamic);
        t.set_width(w);
    }
    Ok(t.to_string())
}

/// CSV has no lists or structs: such columns are written as their display text (`[a, b]`).
fn flatten_nested(b: &RecordBatch) -> Result<RecordBatch> {
    use arrow::array::{ArrayRef, StringBuilder};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let nested = |t: &DataType| t.is_nested();
    if !b.schema().fields().iter().any(|f| nested(f.data_type())) {
        return Ok(b.clone());
    }
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if nested(f.data_type()) {
            let fmt =
                ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).map_err(out_err)?;
            let mut sb = StringBuilder::new();
            for i in 0..c.len() {
                if c.is_null(i) {
                    sb.append_null()
                } else {
                    sb.append_value(fmt.value(i).to_string())
                }
            }
            fields.push(Field::new(f.name(), DataType::Utf8, true));
            cols.push(std::sync::Arc::new(sb.finish()));
        } else {
            fields.push(f.as_ref().clone());
            cols.push(c.clone());
        }
    }
    RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), cols).map_err(out_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_fits_the_width_it_is_given() {
        let long = "x".repeat(200);
        let b = RecordBatch::try_from_iter(vec![
            (
                "event_id",
                std::sync::Arc::new(arrow::array::StringArray::from(vec![
                    long.as_str(),
                    "short",
                ])) as arrow::array::ArrayRef,
            ),
            (
                "n",
                std::sync::Arc::new(arrow::array::Int64Array::from(vec![1, 2]))
                    as arrow::array::ArrayRef,
            ),
        ])
        .unwrap();
        let t = table(std::slice::from_ref(&b), Some(60)).unwrap();
        assert!(t.lines().all(|l| l.chars().count() <= 60), "{t}");
        assert!(t.contains("short"));
        let wide = table(&[b], None).unwrap();
        assert!(wide.lines().any(|l| l.len() > 200), "no width: no wrapping");
    }

    #[test]
    fn an_empty_result_keeps_its_columns() {
        use arrow::datatypes::{DataType, Field, Schema};
        let schema = std::sync::Arc::new(Schema::new(vec![
            Field::new("event_id", DataType::Utf8, false),
            Field::new("n", DataType::Int64, true),
        ]));
        let empty = [RecordBatch::new_empty(schema.clone())];
        let text = |f: Format| {
            let mut out = Vec::new();
            write_batches(f, &empty, &mut out).unwrap();
            out
        };
        assert_eq!(
            String::from_utf8(text(Format::Csv)).unwrap(),
            "event_id,n\n"
        );
        let t = String::from_utf8(text(Format::Table)).unwrap();
        assert!(t.contains("event_id") && t.ends_with("0 rows\n"), "{t}");
        assert!(!t.contains("++"), "{t}");
        assert_eq!(String::from_utf8(text(Format::Json)).unwrap(), "[]\n");
        let pq = bytes::Bytes::from(text(Format::Parquet));
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(pq).unwrap();
        assert_eq!(r.metadata().file_metadata().num_rows(), 0);
        assert_eq!(r.schema().fields().len(), 2);
        assert_eq!(r.schema().field(0).name(), "event_id");
    }
}
