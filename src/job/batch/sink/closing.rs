//! Closing a file off the coordinator: what the sink hands over when it closes a file (the
//! rows still held back, the open file if any, their keys) is finished on a blocking thread
//! ([`CloseJob::run`]): the rows held back written (formats 1 and 2: each tenant's dictionary
//! learnt first if it was not, and the rows sealed), the footer written, the upload completed
//! (fsync, link). Several run at once, beside the
//! coordinator and the decoders, so that a batch over thousands of partitions keeps both
//! cores busy and its fsyncs overlap.

use super::super::keys::{FileKey, PartKeys};
use super::files::{self, OpenFile};
use super::{HeldRow, WrittenFile, seal};
use crate::crypto::RecordCompressor;
use crate::job::{Context, JobError};
use crate::retention::hold::HoldSnapshot;
use std::sync::Arc;

/// A file to finish, as the sink hands it over.
pub(super) struct CloseJob {
    pub(super) rt: tokio::runtime::Handle,
    pub(super) ctx: Context,
    pub(super) batch_id: String,
    pub(super) holds: Arc<HoldSnapshot>,
    pub(super) part: FileKey,
    pub(super) generation: u32,
    pub(super) keys: Arc<PartKeys>,
    /// Rows still held back for their tenant's dictionary, by tenant (counted in the report
    /// already).
    pub(super) held: Vec<(String, Vec<HeldRow>)>,
    pub(super) file: Option<OpenFile>,
}

impl CloseJob {
    pub(super) fn run(self) -> Result<WrittenFile, JobError> {
        let CloseJob {
            rt,
            ctx,
            batch_id,
            holds,
            part,
            generation,
            keys,
            held,
            file,
        } = self;
        let mut f = match file {
            Some(f) => f,
            None => {
                let rows = held.iter().map(|(_, rows)| rows.len()).sum();
                let opened = files::open(&ctx, &batch_id, &part, generation, &keys, rows);
                rt.block_on(opened)?
            }
        };
        let mut z = RecordCompressor::default();
        for (scope, rows) in held {
            // the file is closed to the workers already: what is learnt now seals only these
            let dict = match keys.dict.learnt(&scope) {
                Some(d) => d,
                None => {
                    let samples: Vec<&[u8]> = rows.iter().map(|h| h.plain.as_slice()).collect();
                    keys.dict.set(&scope, keys.dict.train(&samples))
                }
            };
            for HeldRow { mut row, plain } in rows {
                seal(&mut z, &keys, dict.as_deref(), &mut row, plain);
                f.coverage.add(&row.index(), &holds);
                f.writer.push(*row)?;
                if f.writer.has_pending() {
                    rt.block_on(f.writer.upload_pending())?;
                }
            }
        }
        let closing = files::close(part.partition, f, &keys)?;
        let written = rt.block_on(files::complete(ctx, batch_id, closing));
        // its dictionary's tables, learnt here or before, are not needed any more
        keys.dict.close();
        written
    }
}
