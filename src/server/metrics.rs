//! `/metrics`: Prometheus text from `prometheus-client`. The signal to alarm on is
//! `holdfast_landing_oldest_age_seconds`, the age of the oldest landed event not yet in the
//! lake (`pipelines/alerts.yml` fires at 60 s).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub tenant: String,
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Call {
    pub call: &'static str,
}

/// Every metric the server keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RouteLabels, Counter>,
    pub latency: Histogram,
    pub accepted: Family<EventLabels, Counter>,
    pub refused: Family<Outcome, Counter>,
    pub backlog_segments: Gauge,
    pub backlog_bytes: Gauge,
    pub oldest_age: Gauge<f64, AtomicU64>,
    pub batches: Family<Outcome, Counter>,
    pub batch_seconds: Histogram,
    pub stored: Counter,
    pub duplicates: Counter,
    pub quarantined: Counter,
    pub quarantine_entries: Gauge,
    pub kms_calls: Family<Call, Gauge>,
    pub hold_sync: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RouteLabels, Counter>::default();
        let latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let accepted = Family::<EventLabels, Counter>::default();
        let refused = Family::<Outcome, Counter>::default();
        let backlog_segments = Gauge::default();
        let backlog_bytes = Gauge::default();
        let oldest_age = Gauge::<f64, AtomicU64>::default();
        let batches = Family::<Outcome, Counter>::default();
        let batch_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        let (stored, duplicates, quarantined) = Default::default();
        let (quarantine_entries, kms_calls) = Default::default();
        let hold_sync = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let mut r = Registry::with_prefix("holdfast");
        let mut m = Metrics {
            registry: Registry::default(),
            requests,
            latency,
            accepted,
            refused,
            backlog_segments,
            backlog_bytes,
            oldest_age,
            batches,
            batch_seconds,
            stored,
            duplicates,
            quarantined,
            quarantine_entries,
            kms_calls,
            hold_sync,
        };
        m.register(&mut r);
        m.registry = r;
        m
    }
}

impl Metrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "hold_sync_seconds",
            "Time from a hold request to every file it covers pinned at the storage layer (the answer follows)",
            self.hold_sync.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests by route and status",
            self.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time to answer a request (intake: until its events are durable)",
            self.latency.clone(),
        );
        r.register(
            "events_accepted",
            "Events acknowledged (durable in landing) by tenant and source",
            self.accepted.clone(),
        );
        r.register(
            "requests_refused",
            "Requests refused by reason",
            self.refused.clone(),
        );
        r.register(
            "landing_backlog_segments",
            "Landing objects not yet batched (a group commit writes its segments into one)",
            self.backlog_segments.clone(),
        );
        r.register(
            "landing_backlog_bytes",
            "Bytes of landing segments not yet batched",
            self.backlog_bytes.clone(),
        );
        r.register(
            "landing_oldest_age_seconds",
            "Age of the oldest landed event not yet in the lake (0: none waits)",
            self.oldest_age.clone(),
        );
        r.register(
            "batches",
            "Scheduled batches by outcome",
            self.batches.clone(),
        );
        r.register(
            "batch_duration_seconds",
            "Duration of scheduled batches",
            self.batch_seconds.clone(),
        );
        r.register(
            "events_stored",
            "Events stored by scheduled batches",
            self.stored.clone(),
        );
        r.register(
            "events_deduplicated",
            "Lines scheduled batches found already stored or repeated",
            self.duplicates.clone(),
        );
        r.register(
            "events_quarantined",
            "Lines scheduled batches quarantined",
            self.quarantined.clone(),
        );
        r.register(
            "quarantine_entries",
            "Quarantine entries (measured after each scheduled batch)",
            self.quarantine_entries.clone(),
        );
        r.register(
            "kms_calls",
            "Key-service calls since the process started, by call",
            self.kms_calls.clone(),
        );
    }

    /// Sets the key-service calls made since the process started (read from the store's
    /// key service when metrics are asked for).
    pub fn set_kms_calls(&self, c: crate::crypto::kms::KmsCalls) {
        for (call, n) in [
            ("wrap", c.wraps),
            ("unwrap", c.unwraps),
            ("rewrap", c.rewraps),
            ("sign", c.signatures),
        ] {
            let v = i64::try_from(n).unwrap_or(i64::MAX);
            self.kms_calls.get_or_create(&Call { call }).set(v);
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn refuse(&self, outcome: &'static str) {
        self.refused.get_or_create(&Outcome { outcome }).inc();
    }
}
