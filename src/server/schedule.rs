//! Scheduled batches: every `batch_every_secs`, and earlier when the landing backlog passes
//! `batch_backlog_mb`, under the same lease as `holdfast batch` (a cron job and a server can
//! share a store: whoever holds the lease runs, the other waits for its next turn). After
//! each turn the landing backlog is measured again (one listing); in between, the committer
//! adds what it writes.

use super::State;
use crate::job::BatchOptions;
use crate::lake::layout;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Measures the landing backlog: segments, bytes, and the age of the oldest (segment ids
/// begin with their arrival time).
pub async fn measure(state: &State) {
    let Ok(segments) = state.ctx.store.list(layout::LANDING).await else {
        return;
    };
    let bytes: u64 = segments.iter().map(|m| m.size).sum();
    state.backlog_bytes.store(bytes, Ordering::SeqCst);
    state.metrics.backlog_segments.set(segments.len() as i64);
    let oldest = segments
        .iter()
        .filter_map(|m| m.location.filename())
        .filter_map(|name| name.get(..23))
        .filter_map(|at| chrono::NaiveDateTime::parse_from_str(at, "%Y%m%dT%H%M%S%.6f").ok())
        .min()
        .map(|at| at.and_utc());
    *state.oldest.lock().expect("oldest") = oldest;
    gauges(state);
}

/// The backlog gauges, from what was last measured and committed since.
fn gauges(state: &State) {
    let bytes = state.backlog_bytes.load(Ordering::SeqCst);
    state
        .metrics
        .backlog_bytes
        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    let oldest = *state.oldest.lock().expect("oldest");
    let age = oldest.map_or(0.0, |at| {
        (state.ctx.clock.now() - at).num_milliseconds().max(0) as f64 / 1000.0
    });
    state.metrics.oldest_age.set(age);
}

/// Starts the schedule on a thread of its own, driven by the current runtime (a batch is
/// not a `Send` future). Sending `true` stops it; the receiver hears when it has stopped.
pub fn start(
    state: Arc<State>,
    opts: BatchOptions,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::sync::oneshot::Receiver<()>,
) {
    let rt = tokio::runtime::Handle::current();
    let every = Duration::from_secs(state.cfg.batch_every_secs.max(1));
    let early = state.cfg.batch_backlog_mb << 20;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        rt.block_on(run(state, opts, every, early, stopped));
        let _ = done.send(());
    });
    (stop, finished)
}

/// Runs batches until `stop` turns true (a batch under way finishes first).
pub async fn run(
    state: Arc<State>,
    opts: BatchOptions,
    every: Duration,
    early_bytes: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut last = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.changed() => return,
        }
        gauges(&state);
        let due = last.elapsed() >= every;
        let early = state.backlog_bytes.load(Ordering::SeqCst) >= early_bytes;
        if !(due || early) {
            continue;
        }
        last = Instant::now();
        loop {
            let t = Instant::now();
            let r = crate::job::batch(&state.ctx, &opts).await;
            state
                .metrics
                .batch_seconds
                .observe(t.elapsed().as_secs_f64());
            let outcome = match &r {
                Ok(report) => {
                    state.metrics.stored.inc_by(report.stored);
                    state
                        .metrics
                        .duplicates
                        .inc_by(report.duplicates_in_batch + report.already_stored);
                    state.metrics.quarantined.inc_by(report.quarantined);
                    super::log(
                        &state,
                        "batch",
                        &serde_json::json!({"batch_id": report.batch_id, "stored": report.stored, "segments": report.segments, "segments_waiting": report.segments_waiting, "seconds": t.elapsed().as_secs_f64()}),
                    );
                    "committed"
                }
                Err(e) if e.to_string().contains("holds the lease") => "lease_held",
                Err(e) => {
                    super::log(
                        &state,
                        "batch_failed",
                        &serde_json::json!({"error": e.to_string()}),
                    );
                    "failed"
                }
            };
            state
                .metrics
                .batches
                .get_or_create(&super::metrics::Outcome { outcome })
                .inc();
            match r {
                Ok(report) if report.segments_waiting > 0 && !*stop.borrow() => continue,
                _ => break,
            }
        }
        measure(&state).await;
        if let Ok(q) = state.ctx.store.list(layout::QUARANTINE).await {
            state.metrics.quarantine_entries.set(q.len() as i64);
        }
    }
}
