"""Prometheus metrics (``GET /metrics``) and the operation name in the log context.

Per process: each uvicorn worker has its own registry, so with ``--workers N`` a scrape
sees one worker. Set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory, before start) to
aggregate every worker through prometheus-client's multiprocess mode instead.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import structlog
from graphql import (
    FragmentDefinitionNode,
    OperationDefinitionNode,
)
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext

from resolvers.selection_json.collect import collect_fields

REQUESTS = Counter(
    "fieldsync_graphql_requests_total",
    "GraphQL operations executed, by root field and type.",
    ["operation", "type"],
)
REQUEST_SECONDS = Histogram(
    "fieldsync_graphql_request_seconds",
    "Time to execute a GraphQL operation (parse to result), by root field.",
    ["operation"],
)
COMPILED_READS = Counter(
    "fieldsync_compiled_reads_total",
    "Queries answered by a compiled document without the GraphQL executor"
    " (server/compiled_reads.py); they count in the request metrics too.",
)
PUSH_OUTCOMES = Counter(
    "fieldsync_push_outcomes_total",
    "Pushed changes by outcome (APPLIED, MERGED, CONFLICT, ...).",
    ["outcome"],
)
SUBSCRIPTIONS_OPEN = Gauge(
    "fieldsync_subscriptions_open",
    "`changes` subscriptions served by this process.",
    multiprocess_mode="livesum",
)
FANOUT_LAG = Histogram(
    "fieldsync_fanout_lag_seconds",
    "From the start of a hub read of new changes to their enqueueing on every socket.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
POOL_IN_USE = Gauge(
    "fieldsync_db_pool_in_use",
    "Pooled database connections checked out.",
    multiprocess_mode="livesum",
)
POOL_SIZE = Gauge(
    "fieldsync_db_pool_size",
    "Database connections the pool holds open (in use or idle).",
    multiprocess_mode="livesum",
)

# The ``operation`` label names the root field an operation ran (``pushChanges``,
# ``customers``), not the operation name the client chose: that one is a caller's free
# text, and any cap on distinct names lets a stranger fill it with fresh names and push the
# real ones into "other". Root fields are bounded by the schema.
MULTIPLE = "multiple"  # several distinct root fields in one operation
INVALID = "invalid"  # did not parse or validate (nothing ran)
_META_FIELDS = frozenset({"__typename", "__schema", "__type"})


def root_field_label(names: Sequence[str]) -> str:
    """The label of an operation that selected the root fields ``names`` (already checked
    against the schema)."""
    distinct = set(names)
    if len(distinct) == 1:
        return names[0]
    return MULTIPLE if distinct else INVALID


def operation_root_fields(context: ExecutionContext) -> list[str] | None:
    """The root fields the operation runs (fragments and ``@skip``/``@include`` applied),
    or None when the document did not parse and validate or names a field the schema lacks."""
    document = context.graphql_document
    if document is None or context.pre_execution_errors:
        return None
    wanted = context.operation_name
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if wanted is not None:
        operations = [o for o in operations if o.name is not None and o.name.value == wanted]
    if len(operations) != 1:
        return None
    operation = operations[0]
    root_type = context.schema._schema.get_root_type(operation.operation)
    if root_type is None:
        return None
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    collected = collect_fields(
        context.schema._schema,
        fragments,
        context.variables or {},
        root_type,
        [operation.selection_set],
    )
    names = [nodes[0].name.value for nodes in collected.values()]
    if any(n not in root_type.fields and n not in _META_FIELDS for n in names):
        return None
    return names


def count_push_outcomes(outcomes: Iterator[str] | list[str]) -> None:
    """Count each pushed change's outcome."""
    # One labelled increment per outcome kind: labels() costs ~10 us, and a push has up to
    # 1,000 outcomes of five kinds.
    for outcome, count in collections.Counter(outcomes).items():
        PUSH_OUTCOMES.labels(outcome).inc(count)


class OperationMetrics(SchemaExtension):
    """Count and time each operation; bind its name to the log context while it runs."""

    def on_operation(self) -> Iterator[None]:
        """Wrap the whole operation (parse, validate, execute)."""
        started = time.perf_counter()
        context = self.execution_context
        structlog.contextvars.bind_contextvars(operation=context.operation_name or "anonymous")
        try:
            yield
        finally:
            names = operation_root_fields(context)
            name = INVALID if names is None else root_field_label(names)
            try:
                kind = context.operation_type.value
            except Exception:  # noqa: BLE001 - an unparsable document has no type
                kind = "unknown"
            REQUESTS.labels(name, kind).inc()
            REQUEST_SECONDS.labels(name).observe(time.perf_counter() - started)
            structlog.contextvars.unbind_contextvars("operation")

    def on_execute(self) -> Iterator[None]:
        """Rebind once parsed: a document's own operation name is known only now."""
        structlog.contextvars.bind_contextvars(
            operation=self.execution_context.operation_name or "anonymous"
        )
        yield


def metrics_response_body(
    subscriptions: Callable[[], int] | None, pool: Any | None
) -> tuple[bytes, str]:
    """The exposition text; gauges are read at scrape time (no bookkeeping per event)."""
    if subscriptions is not None:
        SUBSCRIPTIONS_OPEN.set(subscriptions())
    if pool is not None:
        POOL_IN_USE.set(pool.checkedout())
        # QueuePool: idle connections plus checked-out ones (overflow included).
        POOL_SIZE.set(pool.checkedin() + pool.checkedout())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
