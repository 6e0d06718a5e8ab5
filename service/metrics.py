"""Prometheus metrics, one registry per app (tests build many apps)."""

from __future__ import annotations

from dataclasses import asdict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sttm_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.stage = Histogram(
            "sttm_stage_seconds", "time per request stage", ["stage"], buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.batch = Histogram(
            "sttm_batch_size",
            "clips per model call",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
            registry=self.registry,
        )
        self.queue = Gauge("sttm_queue_clips", "clips waiting for the model", registry=self.registry)
        self.inflight = Gauge("sttm_inflight_requests", "requests being handled", registry=self.registry)
        self.rejected = Counter(
            "sttm_rejected",
            "requests refused with 503 by reason: queue_full, or late (the latency deadline)",
            ["reason"],
            registry=self.registry,
        )
        self.auth_refused = Counter(
            "sttm_auth_refused",
            "requests refused for their key, by reason (never by key)",
            ["reason"],
            registry=self.registry,
        )
        # live streams
        self.streams_active = Gauge("sttm_streams_active", "live streams running", registry=self.registry)
        self.stream_windows = Counter("sttm_stream_windows", "stream windows classified", registry=self.registry)
        self.stream_dropped = Counter(
            "sttm_stream_dropped_windows", "stream windows dropped: inference was behind", registry=self.registry
        )
        self.stream_lag = Histogram(
            "sttm_stream_lag_seconds",
            "from a window's last frame to its event",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stream_events = Counter(
            "sttm_stream_events", "stream events sent, by event", ["event"], registry=self.registry
        )

        # a ladder of merge ratios (a single model is one rung)
        self.rung_clips = Counter(
            "sttm_rung_clips", "clips run per rung (nominal reduction)", ["reduction"], registry=self.registry
        )
        self.rung_in_use = Gauge(
            "sttm_rung_in_use", "nominal reduction of the rung the last batch ran on", registry=self.registry
        )
        self.batch_seconds = Histogram(
            "sttm_batch_seconds",
            "model time per batch: predicted by the load policy (queue x cost per clip) and actual",
            ["reduction", "kind"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe_batch(self, run) -> None:
        """One model call (a `service.ladder_policy.BatchRun`)."""
        reduction = f"{run.rung.reduction:g}"
        self.batch.observe(run.clips)
        self.rung_clips.labels(reduction).inc(run.clips)
        self.rung_in_use.set(run.rung.reduction)
        self.batch_seconds.labels(reduction, "predicted").observe(run.predicted_s)
        self.batch_seconds.labels(reduction, "actual").observe(run.seconds)

    def observe(self, latency) -> None:
        """One request's stage latencies (a dataclass of seconds per stage)."""
        for stage, seconds in asdict(latency).items():
            self.stage.labels(stage).observe(seconds)
