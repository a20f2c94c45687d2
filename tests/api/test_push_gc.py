"""A push raises the young GC threshold while it runs, and puts it back (resolvers/push_gc.py)."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import resolvers.sync
from resolvers.push_gc import PUSH_YOUNG_THRESHOLD, fewer_young_collections
from tests.api.sync_client import Device


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    """The worker's thresholds (server/gc_pauses.py's defaults), restored after the test."""
    before = gc.get_threshold()
    gc.set_threshold(2000, 10, 100)
    try:
        yield gc.get_threshold()
    finally:
        gc.set_threshold(*before)


def create(device: Device, name: str) -> dict[str, object]:
    return device.change("customer", str(uuid.uuid4()), {"businessName": name}, base=None)


async def test_a_push_leaves_the_thresholds_as_they_were(tenant, thresholds, monkeypatch):
    """Over the API: raised while the push is decided and written, restored after it."""
    seen: list[tuple[int, int, int]] = []
    decide_and_write = resolvers.sync.push

    async def noting(*args: Any, **kwargs: Any) -> Any:
        seen.append(gc.get_threshold())
        return await decide_and_write(*args, **kwargs)

    monkeypatch.setattr(resolvers.sync, "push", noting)
    device = await Device(tenant.admin).register()
    result = await device.push([create(device, "A"), create(device, "B")])
    assert [r["outcome"] for r in result["results"]] == ["APPLIED", "APPLIED"]
    assert seen == [(PUSH_YOUNG_THRESHOLD, 10, 100)]
    assert gc.get_threshold() == thresholds


async def test_overlapping_pushes_restore_once_the_last_ends(thresholds):
    """Two pushes overlapping in one worker: raised until the second ends."""
    first, second = fewer_young_collections(), fewer_young_collections()
    first.__enter__()
    second.__enter__()
    assert gc.get_threshold() == (PUSH_YOUNG_THRESHOLD, 10, 100)
    first.__exit__(None, None, None)
    assert gc.get_threshold() == (PUSH_YOUNG_THRESHOLD, 10, 100)
    second.__exit__(None, None, None)
    assert gc.get_threshold() == thresholds
    await asyncio.sleep(0)


def test_a_policy_changed_meanwhile_is_kept(thresholds):
    """Thresholds someone else set during the push are left as they set them."""
    with fewer_young_collections():
        gc.set_threshold(5000, 20, 100)
    assert gc.get_threshold() == (5000, 20, 100)


def test_a_disabled_or_higher_threshold_is_not_touched(thresholds):
    """A young threshold of 0 (collector off) or above the push's stays as it is."""
    for young in (0, PUSH_YOUNG_THRESHOLD * 2):
        gc.set_threshold(young, 10, 100)
        with fewer_young_collections():
            assert gc.get_threshold() == (young, 10, 100)
        assert gc.get_threshold() == (young, 10, 100)
