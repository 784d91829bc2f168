//! Prometheus metrics of the queue, by queue and job type. Names are a contract: the operator's
//! alert rules read `queue_jobs_waiting`, `queue_oldest_job_age_seconds` and
//! `queue_jobs_dead_lettered_total`. Counters count events in this process; gauges are set from
//! [`QueueStats`] (the queue as a whole), so any one worker's scrape shows the backlog.
//!
//! A publisher (the api-server) registers only the enqueue side ([`QueueMetrics::register_publisher`]),
//! so its scrape does not carry empty worker series.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::queue::stats::QueueStats;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub queue: String,
    pub r#type: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

type Counters = Family<JobLabels, Counter>;

/// Cheap to clone (every family is shared).
#[derive(Debug, Clone)]
pub struct QueueMetrics {
    enqueued: Counters,
    not_durable: Counters,
    started: Counters,
    completed: Counters,
    failed: Counters,
    retried: Counters,
    dead_lettered: Counters,
    duration: Family<JobLabels, Histogram>,
    waiting: Family<QueueLabels, Gauge>,
    delayed: Family<QueueLabels, Gauge>,
    active: Family<QueueLabels, Gauge>,
    dead: Family<QueueLabels, Gauge>,
    oldest_age: Family<QueueLabels, Gauge<f64, AtomicU64>>,
}

impl QueueMetrics {
    /// Every metric: for a worker (which may publish too).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::register_publisher(registry);
        m.register_consumer(registry);
        m
    }

    /// Only the enqueue side: for a process that publishes jobs but runs none.
    pub fn register_publisher(registry: &mut Registry) -> Self {
        let m = Self {
            enqueued: Counters::default(),
            not_durable: Counters::default(),
            started: Counters::default(),
            completed: Counters::default(),
            failed: Counters::default(),
            retried: Counters::default(),
            dead_lettered: Counters::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 18))
            }),
            waiting: Family::default(),
            delayed: Family::default(),
            active: Family::default(),
            dead: Family::default(),
            oldest_age: Family::default(),
        };
        // prometheus-client appends `_total` to counters.
        registry.register(
            "queue_jobs_enqueued",
            "Jobs enqueued (new jobs; a repeated id or idempotency key is not counted)",
            m.enqueued.clone(),
        );
        registry.register(
            "queue_jobs_not_durable",
            "Jobs whose enqueue failed because too few replicas confirmed them in time",
            m.not_durable.clone(),
        );
        m
    }

    fn register_consumer(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "queue_jobs_started",
            "Job attempts started",
            m.started.clone(),
        );
        registry.register(
            "queue_jobs_completed",
            "Jobs completed",
            m.completed.clone(),
        );
        registry.register("queue_jobs_failed", "Job attempts failed", m.failed.clone());
        registry.register(
            "queue_jobs_retried",
            "Failed attempts scheduled for retry",
            m.retried.clone(),
        );
        registry.register(
            "queue_jobs_dead_lettered",
            "Jobs moved to the dead-letter queue",
            m.dead_lettered.clone(),
        );
        registry.register(
            "queue_job_duration_seconds",
            "Time a handler spent on one attempt",
            m.duration.clone(),
        );
        registry.register("queue_jobs_waiting", "Jobs ready to run", m.waiting.clone());
        registry.register(
            "queue_jobs_delayed",
            "Jobs delayed or waiting to retry",
            m.delayed.clone(),
        );
        registry.register(
            "queue_jobs_active",
            "Jobs leased by a worker",
            m.active.clone(),
        );
        registry.register(
            "queue_jobs_dead",
            "Jobs in the dead-letter queue",
            m.dead.clone(),
        );
        registry.register(
            "queue_oldest_job_age_seconds",
            "Age of the oldest ready job",
            m.oldest_age.clone(),
        );
    }

    fn labels(queue: &str, job_type: &str) -> JobLabels {
        JobLabels {
            queue: queue.to_string(),
            r#type: job_type.to_string(),
        }
    }

    pub fn enqueued(&self, queue: &str, job_type: &str) {
        self.enqueued
            .get_or_create(&Self::labels(queue, job_type))
            .inc();
    }

    pub fn not_durable(&self, queue: &str, job_type: &str) {
        self.not_durable
            .get_or_create(&Self::labels(queue, job_type))
            .inc();
    }

    pub fn started(&self, queue: &str, job_type: &str) {
        self.started
            .get_or_create(&Self::labels(queue, job_type))
            .inc();
    }

    pub fn completed(&self, queue: &str, job_type: &str, took: Duration) {
        let l = Self::labels(queue, job_type);
        self.completed.get_or_create(&l).inc();
        self.duration.get_or_create(&l).observe(took.as_secs_f64());
    }

    /// A failed attempt; `retried` says whether it will run again (else it was dead-lettered).
    pub fn failed(&self, queue: &str, job_type: &str, took: Duration, retried: bool) {
        let l = Self::labels(queue, job_type);
        self.failed.get_or_create(&l).inc();
        self.duration.get_or_create(&l).observe(took.as_secs_f64());
        if retried {
            self.retried.get_or_create(&l).inc();
        } else {
            self.dead_lettered.get_or_create(&l).inc();
        }
    }

    /// Dead-lettered without a handler outcome (lease expired on the last attempt).
    pub fn dead_lettered(&self, queue: &str, job_type: &str, n: u64) {
        self.dead_lettered
            .get_or_create(&Self::labels(queue, job_type))
            .inc_by(n);
    }

    pub fn observe_stats(&self, queue: &str, stats: &QueueStats) {
        let l = QueueLabels {
            queue: queue.to_string(),
        };
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.waiting.get_or_create(&l).set(g(stats.waiting));
        self.delayed.get_or_create(&l).set(g(stats.delayed));
        self.active.get_or_create(&l).set(g(stats.active));
        self.dead.get_or_create(&l).set(g(stats.dead));
        self.oldest_age
            .get_or_create(&l)
            .set(stats.oldest_waiting_age.map_or(0.0, |d| d.as_secs_f64()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_names_the_alert_rules_use() -> Result<(), std::fmt::Error> {
        let mut registry = Registry::default();
        let m = QueueMetrics::register(&mut registry);
        m.enqueued("jobs", "noop");
        m.failed("jobs", "noop", Duration::from_millis(3), false);
        m.observe_stats(
            "jobs",
            &QueueStats {
                waiting: 7,
                oldest_waiting_age: Some(Duration::from_secs(2)),
                ..Default::default()
            },
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        for line in [
            r#"queue_jobs_waiting{queue="jobs"} 7"#,
            r#"queue_oldest_job_age_seconds{queue="jobs"} 2.0"#,
            r#"queue_jobs_dead_lettered_total{queue="jobs",type="noop"} 1"#,
            r#"queue_jobs_enqueued_total{queue="jobs",type="noop"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        Ok(())
    }

    #[test]
    fn a_publisher_registers_only_the_enqueue_side() -> Result<(), std::fmt::Error> {
        let mut registry = Registry::default();
        let m = QueueMetrics::register_publisher(&mut registry);
        m.enqueued("jobs", "noop");
        m.not_durable("jobs", "noop");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        assert!(text.contains(r#"queue_jobs_enqueued_total{queue="jobs",type="noop"} 1"#));
        assert!(text.contains(r#"queue_jobs_not_durable_total{queue="jobs",type="noop"} 1"#));
        assert!(!text.contains("queue_jobs_waiting"), "{text}");
        Ok(())
    }
}
