//! A batch's options from a pipeline file's `[batch]` table (or the defaults).

use super::{BatchOptions, default_threads};
use crate::config::{Pipeline, Policies};

/// The options a batch runs with: `policies` (already checked against the store's floor) and
/// the pipeline's limits, else the defaults.
pub fn batch_options(pipeline: Option<&Pipeline>, policies: Policies) -> BatchOptions {
    let b = pipeline.map(|p| p.batch.clone()).unwrap_or_default();
    BatchOptions {
        policies,
        max_input_bytes: b.max_input_mb.saturating_mul(1 << 20),
        memory_bytes: usize::try_from(b.memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
        threads: if b.threads == 0 {
            default_threads()
        } else {
            b.threads
        },
        max_future: chrono::Duration::hours(b.max_future_hours.into()),
        ..BatchOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_limits_become_batch_options() {
        let d = batch_options(None, Policies::default());
        assert_eq!(d.threads, default_threads());
        let mut p = Pipeline::default();
        p.batch.threads = 3;
        p.batch.max_input_mb = 2;
        p.batch.max_future_hours = 5;
        let o = batch_options(Some(&p), Policies::default());
        assert_eq!(o.threads, 3);
        assert_eq!(o.max_input_bytes, 2 << 20);
        assert_eq!(o.max_future, chrono::Duration::hours(5));
    }
}
