"""A request's execution is freed by reference counting when it ends, not left to the
cyclic garbage collector (schema/preencoded.py, resolvers/selection_json/collect.py).

Garbage in reference cycles waits for a collection, which traverses it, promotes what is
still referenced and, in a long-running worker, feeds the full passes that pause every
socket. A push of 1,000 changes used to leave 15,219 objects so (the execution context held
itself through graphql-core's resolver helpers, and the selection walk through its own
closure, each keeping the variables alive).
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator

import pytest

from schema.preencoded import FieldsyncExecutionContext
from schema.sync import ChangeInput
from tests.api.sync_client import Device
from tests.collector import no_collector


@pytest.fixture
def collector_off() -> Iterator[None]:
    """The cyclic collector off for the test: what is freed is freed by reference counts."""
    with no_collector():
        yield


def alive(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, kind))


async def test_a_push_and_a_read_leave_no_execution_behind(tenant, collector_off):
    """After a push (with its records) and a read, no execution context and no pushed
    change input is still alive, though no collection ran."""
    device = await Device(tenant.admin).register()
    changes = [
        device.change("customer", str(uuid.uuid4()), {"businessName": f"C{i}"}, base=None)
        for i in range(20)
    ]
    result = await device.push(changes)
    assert [r["outcome"] for r in result["results"]] == ["APPLIED"] * 20
    page = await device.pull_page()
    assert len(page["changes"]) == 20
    assert alive(FieldsyncExecutionContext) == 0
    assert alive(ChangeInput) == 0
