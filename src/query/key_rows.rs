//! A scan of `events` that needs no column of the files (only hive keys, or none, as in
//! `count(*)` grouped by day): each kept file's rows are its manifest's record count of its
//! partition's key values, generated without opening the file. Exact: every record of a file
//! has its partition's keys, and `verify` checks each manifest's count against its file.

use arrow::array::{ArrayRef, Int32Array, RecordBatch, RecordBatchOptions, StringArray};
use arrow::datatypes::SchemaRef;
use datafusion::error::Result;
use datafusion::physical_plan::memory::{LazyBatchGenerator, LazyMemoryExec};
use parking_lot::RwLock;
use std::any::Any;
use std::sync::Arc;

const BATCH_ROWS: u64 = 8192;

/// One file's keys and record count.
#[derive(Debug, Clone)]
pub(super) struct KeyedCount {
    pub(super) year: i32,
    pub(super) month: i32,
    pub(super) day: i32,
    pub(super) interaction_type: String,
    pub(super) rows: u64,
}

/// Yields the rows of its files, `BATCH_ROWS` at a time, with the projected keys.
#[derive(Debug, Clone)]
struct Generator {
    files: Arc<Vec<KeyedCount>>,
    /// Which keys (0 year, 1 month, 2 day, 3 interaction_type) the output holds, in order.
    keys: Vec<usize>,
    schema: SchemaRef,
    file: usize,
    done_in_file: u64,
    left: u64,
}

impl std::fmt::Display for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "manifest record counts of {} file(s)", self.files.len())
    }
}

impl LazyBatchGenerator for Generator {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn generate_next_batch(&mut self) -> Result<Option<RecordBatch>> {
        while self.file < self.files.len() && self.done_in_file == self.files[self.file].rows {
            self.file += 1;
            self.done_in_file = 0;
        }
        if self.file == self.files.len() || self.left == 0 {
            return Ok(None);
        }
        let f = &self.files[self.file];
        let n = (f.rows - self.done_in_file).min(BATCH_ROWS).min(self.left);
        self.done_in_file += n;
        self.left -= n;
        let n = n as usize;
        let columns: Vec<ArrayRef> = self
            .keys
            .iter()
            .map(|k| -> ArrayRef {
                match k {
                    0 => Arc::new(Int32Array::from_value(f.year, n)),
                    1 => Arc::new(Int32Array::from_value(f.month, n)),
                    2 => Arc::new(Int32Array::from_value(f.day, n)),
                    _ => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                        f.interaction_type.as_str(),
                        n,
                    ))),
                }
            })
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        Ok(Some(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?))
    }

    fn reset_state(&self) -> Arc<RwLock<dyn LazyBatchGenerator>> {
        Arc::new(RwLock::new(Generator {
            file: 0,
            done_in_file: 0,
            left: self.left_at_start(),
            ..self.clone()
        }))
    }
}

impl Generator {
    fn left_at_start(&self) -> u64 {
        self.files
            .iter()
            .map(|f| f.rows)
            .sum::<u64>()
            .min(self.left)
    }
}

/// The plan: `schema` holds the projected keys (`keys`, indices into year, month, day,
/// interaction_type), `limit` caps the rows, `parts` generators share the files.
pub(super) fn plan(
    files: Vec<KeyedCount>,
    keys: Vec<usize>,
    schema: SchemaRef,
    limit: Option<usize>,
    parts: usize,
) -> Result<LazyMemoryExec> {
    let parts = parts.clamp(1, files.len().max(1));
    // with a limit, one generator stops after exactly that many rows
    let parts = if limit.is_some() { 1 } else { parts };
    let size = files.len().div_ceil(parts).max(1);
    let generators: Vec<Arc<RwLock<dyn LazyBatchGenerator>>> = files
        .chunks(size)
        .map(|chunk| {
            let g = Generator {
                files: Arc::new(chunk.to_vec()),
                keys: keys.clone(),
                schema: schema.clone(),
                file: 0,
                done_in_file: 0,
                left: limit.map_or(u64::MAX, |l| l as u64),
            };
            Arc::new(RwLock::new(g)) as Arc<RwLock<dyn LazyBatchGenerator>>
        })
        .collect();
    LazyMemoryExec::try_new(schema, generators)
}
