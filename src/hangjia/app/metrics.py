"""Prometheus metrics, named as vLLM names them (`vllm:` → `hangjia:`), so its dashboards and alerts carry over.

Each app owns its own CollectorRegistry (not prometheus_client's global one), so several apps in one process
(tests, A/B pairs) count apart. The routes call one object per request:

    record = metrics.request(model)      # arrived: waiting
    record.admitted()                    # got a slot: queue time; running
    record.step()                        # after each decoding step: first-token and inter-token times
    record.finished(reason, prompt, completion)
    record.close()                       # always (finally): leaves the running/waiting gauges

A request answered from the response cache (app/cache.py) takes no slot and has no record: `metrics.cached(model)`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

# vLLM's buckets (vllm/v1/metrics/loggers.py), so the same dashboards read the same ranges.
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0)
_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0)
_REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0)
_RETRIEVAL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

LABEL = ("model_name",)


class Metrics:
    """The server's metrics in one registry; `render()` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttft = Histogram(
            "hangjia:time_to_first_token_seconds",
            "Time from arrival to the first generated token.",
            LABEL,
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.inter_token = Histogram(
            "hangjia:inter_token_latency_seconds",
            "Time between two decoding steps of one request.",
            LABEL,
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.per_output_token = Histogram(
            "hangjia:time_per_output_token_seconds",
            "Mean time per generated token after the first, one observation per request.",
            LABEL,
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "hangjia:e2e_request_latency_seconds",
            "Time from arrival to the last token (or to the abort).",
            LABEL,
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "hangjia:request_queue_time_seconds",
            "Time a request waited for a generation slot.",
            LABEL,
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.retrieval = Histogram(
            "hangjia:retrieval_latency_seconds",
            "Time to retrieve the passages put in front of a RAG question.",
            LABEL,
            buckets=_RETRIEVAL_BUCKETS,
            registry=r,
        )
        self.running = Gauge("hangjia:num_requests_running", "Requests generating now.", LABEL, registry=r)
        self.waiting = Gauge("hangjia:num_requests_waiting", "Requests waiting for a slot.", LABEL, registry=r)
        self.model_memory = Gauge(
            "hangjia:model_memory_bytes",
            "Estimated memory a named version (serve.versions) holds while loaded; 0 while it is not.",
            LABEL,
            registry=r,
        )
        self.model_loads = Counter("hangjia:model_loads", "Named versions loaded.", LABEL, registry=r)
        self.model_unloads = Counter(
            "hangjia:model_unloads", "Named versions unloaded to stay within serve.memory_budget_mb.", LABEL, registry=r
        )
        # prometheus_client adds the `_total` suffix to counters.
        self.prompt_tokens = Counter("hangjia:prompt_tokens", "Prompt tokens processed.", LABEL, registry=r)
        self.generation_tokens = Counter("hangjia:generation_tokens", "Tokens generated.", LABEL, registry=r)
        self.success = Counter(
            "hangjia:request_success",
            "Requests finished, by reason: stop, length, abort (the client went away) or cached (the response cache).",
            (*LABEL, "finished_reason"),
            registry=r,
        )
        self.guarded = Counter(
            "hangjia:guard_blocked",
            "RAG answers the guard replaced by 'the documents do not say', by reason: unknown_terms, ungrounded.",
            (*LABEL, "reason"),
            registry=r,
        )
        self.rejected = Counter(
            "hangjia:request_rejected", "Requests turned away with 429 because the queue was full.", LABEL, registry=r
        )
        self.cache_queries = Counter(
            "hangjia:response_cache_queries",
            "Temperature-0 requests looked up in the response cache.",
            LABEL,
            registry=r,
        )
        self.cache_hits = Counter(
            "hangjia:response_cache_hits",
            "Requests answered from the response cache: nothing was processed or generated, so they add no prompt or "
            "generation tokens and no latencies; request_success counts them as finished_reason cached.",
            LABEL,
            registry=r,
        )
        self.cache_entries = Gauge(
            "hangjia:response_cache_entries", "Answers in the response cache.", LABEL, registry=r
        )

    def request(self, model: str) -> RequestRecord:
        """Start recording one request, now (it counts as waiting until `admitted`)."""
        return RequestRecord(self, model)

    def cached(self, model: str) -> None:
        """A request answered from the response cache: a success, and nothing else (no tokens, no latencies)."""
        self.success.labels(model, "cached").inc()

    @contextmanager
    def retrieving(self, model: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.retrieval.labels(model).observe(time.perf_counter() - start)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestRecord:
    """One request's timings and counts. `step` runs on the decoding thread; the rest on the event loop."""

    def __init__(self, metrics: Metrics, model: str):
        self.m, self.model = metrics, model
        self.arrived = time.perf_counter()
        self.first: float | None = None
        self.last: float | None = None
        self.state = "waiting"
        self._lock = threading.Lock()
        metrics.waiting.labels(model).inc()

    def rejected(self) -> None:
        self.m.rejected.labels(self.model).inc()
        self.close()

    def admitted(self) -> None:
        self.m.queue.labels(self.model).observe(time.perf_counter() - self.arrived)
        self.m.waiting.labels(self.model).dec()
        self.m.running.labels(self.model).inc()
        self.state = "running"

    def step(self) -> None:
        now = time.perf_counter()
        with self._lock:
            if self.first is None:
                self.first = now
                self.m.ttft.labels(self.model).observe(now - self.arrived)
            else:
                self.m.inter_token.labels(self.model).observe(now - self.last)
            self.last = now

    def finished(self, reason: str, prompt_tokens: int, completion_tokens: int) -> None:
        now = time.perf_counter()
        self.m.e2e.labels(self.model).observe(now - self.arrived)
        if self.first is not None and self.last is not None and completion_tokens > 1:
            self.m.per_output_token.labels(self.model).observe((self.last - self.first) / (completion_tokens - 1))
        self.m.prompt_tokens.labels(self.model).inc(prompt_tokens)
        self.m.generation_tokens.labels(self.model).inc(completion_tokens)
        self.m.success.labels(self.model, reason).inc()

    def close(self) -> None:
        """Leave the gauges; safe to call twice."""
        if self.state == "waiting":
            self.m.waiting.labels(self.model).dec()
        elif self.state == "running":
            self.m.running.labels(self.model).dec()
        self.state = "closed"
