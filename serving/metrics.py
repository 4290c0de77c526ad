"""Prometheus metrics of the model server, kept in a registry of their own."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE", "ServingMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class ServingMetrics:
    """Counters, histograms and gauges of one server, in a private registry.

    Label values only ever come from the model repository (model names and
    versions found on disk), never from what a client sends, so a client
    cannot grow the number of time series.

    Args:
        registry: Registry to register into; a fresh one when omitted.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "jaxtx_serving_requests_total",
            "Model requests by model, version, API and status (HTTP code; gRPC status name).",
            ["model", "version", "api", "code"],
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "jaxtx_serving_request_latency_seconds",
            "Time from the request's arrival to its response, by model and API.",
            ["model", "version", "api"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "jaxtx_serving_batch_size",
            "Rows in each call of a model (after dynamic batching).",
            ["model", "version"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "jaxtx_serving_batch_requests",
            "Client requests coalesced into each call of a model.",
            ["model", "version"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.inference_latency = Histogram(
            "jaxtx_serving_inference_latency_seconds",
            "Time of each call of a model's exported function.",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.loaded_versions = Gauge(
            "jaxtx_serving_loaded_versions",
            "Versions of each model that are loaded and serving.",
            ["model"],
            registry=self.registry,
        )
        self.load_failures = Counter(
            "jaxtx_serving_model_load_failures_total",
            "Versions that failed to load or warm up.",
            ["model", "version"],
            registry=self.registry,
        )
        self.load_latency = Histogram(
            "jaxtx_serving_model_load_seconds",
            "Time to load and warm up one model version.",
            ["model"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=self.registry,
        )

        self.scan_errors = Counter(
            "jaxtx_serving_repository_scan_errors_total",
            "Times a scan found a model's files missing or unreadable (kept serving meanwhile).",
            ["kind"],
            registry=self.registry,
        )
        self.oov_values = Counter(
            "jaxtx_serving_oov_values_total",
            "String values outside a feature's vocabulary (mapped to an OOV bucket).",
            ["model", "version", "feature"],
            registry=self.registry,
        )
        self.rejected_connections = Counter(
            "jaxtx_serving_rejected_connections_total",
            "Connections answered 503 at once because too many were open.",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """Render every metric in the Prometheus text exposition format.

        Returns:
            The exposition, to be served with `CONTENT_TYPE`.
        """
        return generate_latest(self.registry)
