//! Every metric the connector exports, in one place. Labels are bounded: topic names,
//! partition (task) numbers, decision outcomes and reasons, error classes — never a user id.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Input records consumed, by topic.
    pub events_consumed: IntCounterVec,
    /// Decisions taken, by outcome and reason.
    pub decisions: IntCounterVec,
    /// Send-commands emitted.
    pub send_commands: IntCounter,
    /// Records written to the shadow topic by `SHADOW` follow-ons, by record
    /// (`send_command`, `decision`).
    pub shadow_records: IntCounterVec,
    /// Pending timers, by task.
    pub pending_timers: IntGaugeVec,
    /// How late timers fired: emitted_at − due_at, seconds.
    pub fire_lateness: Histogram,
    /// Duration of the last restore, by task, seconds.
    pub restore_duration: prometheus::GaugeVec,
    /// Changelog records restored, by task.
    pub restore_records: IntCounterVec,
    /// Tasks being restored right now.
    pub restore_in_progress: IntGauge,
    /// Records not yet consumed (high watermark − position), by topic and partition.
    pub consumer_lag: IntGaugeVec,
    /// Decoded input records held in memory, not yet processed, by topic and partition.
    pub input_buffered: IntGaugeVec,
    /// Time to commit a transaction (or flush and commit offsets), seconds.
    pub commit_seconds: Histogram,
    /// Transactions aborted (each followed by a re-synchronisation from committed state).
    pub transaction_aborts: IntCounter,
    /// Records sent to the dead-letter topic, by source topic and error class.
    pub dlq_records: IntCounterVec,
    /// 1 when the catalog is loaded and every assigned task is restored.
    pub ready: IntGauge,
    /// Timer entries more than a minute past due (an upper bound: cancelled sends may
    /// still hold an entry).
    pub overdue_timers: IntGauge,
    /// Where each task is in an expansion of the inputs: 1 reading side feeds, 2 waiting
    /// for its origins' hand-off, 3 done (no series: no expansion known).
    pub expansion_phase: IntGaugeVec,
    /// Users handed over to their new task by expansions.
    pub expansion_handoffs: IntCounter,
    /// Input records forwarded to their user's new partition after an expansion's cut.
    pub expansion_late_records: IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let m = Self {
            events_consumed: IntCounterVec::new(
                Opts::new("connector_events_consumed_total", "Input records consumed"),
                &["topic"],
            )
            .expect("valid metric"),
            decisions: IntCounterVec::new(
                Opts::new(
                    "connector_decisions_total",
                    "Decisions by outcome and reason",
                ),
                &["outcome", "reason"],
            )
            .expect("valid metric"),
            send_commands: IntCounter::new(
                "connector_send_commands_total",
                "Send-commands emitted",
            )
            .expect("valid metric"),
            shadow_records: IntCounterVec::new(
                Opts::new(
                    "connector_shadow_records_total",
                    "Would-be send-commands and decisions of shadow follow-ons",
                ),
                &["record"],
            )
            .expect("valid metric"),
            pending_timers: IntGaugeVec::new(
                Opts::new("connector_pending_timers", "Pending timers by task"),
                &["task"],
            )
            .expect("valid metric"),
            fire_lateness: Histogram::with_opts(
                HistogramOpts::new(
                    "connector_fire_lateness_seconds",
                    "How late timers fired (emitted_at - due_at)",
                )
                .buckets(vec![
                    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0,
                ]),
            )
            .expect("valid metric"),
            restore_duration: prometheus::GaugeVec::new(
                Opts::new(
                    "connector_restore_duration_seconds",
                    "Duration of the last restore by task",
                ),
                &["task"],
            )
            .expect("valid metric"),
            restore_records: IntCounterVec::new(
                Opts::new(
                    "connector_restore_records_total",
                    "Changelog records restored",
                ),
                &["task"],
            )
            .expect("valid metric"),
            restore_in_progress: IntGauge::new(
                "connector_restore_in_progress",
                "Tasks being restored",
            )
            .expect("valid metric"),
            consumer_lag: IntGaugeVec::new(
                Opts::new(
                    "connector_consumer_lag",
                    "Records behind the high watermark",
                ),
                &["topic", "partition"],
            )
            .expect("valid metric"),
            input_buffered: IntGaugeVec::new(
                Opts::new(
                    "connector_input_buffered_records",
                    "Decoded input records held in memory, not yet processed",
                ),
                &["topic", "partition"],
            )
            .expect("valid metric"),
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new("connector_transaction_commit_seconds", "Commit latency")
                    .buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                    ]),
            )
            .expect("valid metric"),
            transaction_aborts: IntCounter::new(
                "connector_transaction_aborts_total",
                "Transactions aborted",
            )
            .expect("valid metric"),
            dlq_records: IntCounterVec::new(
                Opts::new(
                    "connector_dlq_records_total",
                    "Records sent to the dead-letter topic",
                ),
                &["topic", "class"],
            )
            .expect("valid metric"),
            ready: IntGauge::new(
                "connector_ready",
                "Catalog loaded and every assigned task restored",
            )
            .expect("valid metric"),
            overdue_timers: IntGauge::new(
                "connector_overdue_timers",
                "Timer entries more than a minute past due",
            )
            .expect("valid metric"),
            expansion_phase: IntGaugeVec::new(
                Opts::new(
                    "connector_expansion_phase",
                    "Expansion phase by task: 1 side feeds, 2 waiting for origins, 3 done",
                ),
                &["task"],
            )
            .expect("valid metric"),
            expansion_handoffs: IntCounter::new(
                "connector_expansion_handed_over_users_total",
                "Users handed over to their new task by expansions",
            )
            .expect("valid metric"),
            expansion_late_records: IntCounter::new(
                "connector_expansion_late_records_total",
                "Input records forwarded to their user's new partition after a cut",
            )
            .expect("valid metric"),
            registry,
        };
        for c in [
            Box::new(m.events_consumed.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.decisions.clone()),
            Box::new(m.send_commands.clone()),
            Box::new(m.shadow_records.clone()),
            Box::new(m.pending_timers.clone()),
            Box::new(m.fire_lateness.clone()),
            Box::new(m.restore_duration.clone()),
            Box::new(m.restore_records.clone()),
            Box::new(m.restore_in_progress.clone()),
            Box::new(m.consumer_lag.clone()),
            Box::new(m.input_buffered.clone()),
            Box::new(m.commit_seconds.clone()),
            Box::new(m.transaction_aborts.clone()),
            Box::new(m.dlq_records.clone()),
            Box::new(m.ready.clone()),
            Box::new(m.overdue_timers.clone()),
            Box::new(m.expansion_phase.clone()),
            Box::new(m.expansion_handoffs.clone()),
            Box::new(m.expansion_late_records.clone()),
        ] {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding of gathered metrics");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
