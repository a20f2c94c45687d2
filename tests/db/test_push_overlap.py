"""The push's overlap of Python and SQL never leaves a statement running behind its caller.

``db.push._alongside`` runs Python while a statement runs; ``_ChunkWriter`` writes the
chunks queued so far, in order, while the next ones are decided. Whatever fails, the statement or chunk in flight has
ended before the caller goes on (the connection is then free for the savepoint's
rollback), and the error reported is the one that happened first. Plain asyncio: the
statements are stand-ins that record when they start and end.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from db import push


class Statement:
    """A stand-in for a statement on the connection: started, then ended after a wait."""

    def __init__(self, seconds: float = 0.01, error: Exception | None = None) -> None:
        self.seconds = seconds
        self.error = error
        self.events: list[str] = []

    async def run(self) -> str:
        self.events.append("started")
        await asyncio.sleep(self.seconds)
        self.events.append("ended")
        if self.error is not None:
            raise self.error
        return "rows"


async def test_the_statement_starts_before_the_work_and_both_results_come_back() -> None:
    statement = Statement()
    seen: list[list[str]] = []

    def work() -> int:
        seen.append(list(statement.events))
        return 42

    assert await push._alongside(statement.run(), work) == ("rows", 42)
    assert seen == [["started"]]


async def test_work_that_fails_waits_for_the_statement_and_raises_its_own_error() -> None:
    statement = Statement(error=RuntimeError("the statement's"))

    def work() -> None:
        raise ValueError("the work's")

    with pytest.raises(ValueError, match="the work's"):
        await push._alongside(statement.run(), work)
    assert statement.events == ["started", "ended"]


async def test_a_failing_statement_raises_after_the_work() -> None:
    statement = Statement(error=RuntimeError("refused"))
    with pytest.raises(RuntimeError, match="refused"):
        await push._alongside(statement.run(), lambda: None)
    assert statement.events == ["started", "ended"]


class Writer(push._ChunkWriter):
    """A chunk writer whose chunks are stand-in statements."""

    def __init__(self, statements: list[Statement]) -> None:
        super().__init__(conn=None, org_id=None, device={}, original={})  # type: ignore[arg-type]
        self.statements = iter(statements)

    async def _write(self, chunk: Any, now: Any) -> None:
        await next(self.statements).run()


def chunk() -> push._Chunk:
    made = push._Chunk()
    made.conflicts.append({})
    return made


async def test_chunks_are_written_in_order_without_holding_the_caller() -> None:
    first, second = Statement(), Statement()
    writer = Writer([first, second])
    await writer.submit(chunk(), None)  # type: ignore[arg-type]
    assert first.events == ["started"]
    await writer.submit(chunk(), None)  # type: ignore[arg-type]
    # Queued: the caller goes on deciding while the first chunk is still written.
    assert first.events == ["started"]
    assert second.events == []
    await writer.finish()
    assert first.events == second.events == ["started", "ended"]


async def test_chunks_queued_behind_a_write_go_out_together() -> None:
    first, together = Statement(), Statement()
    writer = Writer([first, together])
    written: list[int] = []
    write = writer._write

    async def counting(chunk: push._Chunk, now: Any) -> None:
        written.append(len(chunk.conflicts))
        await write(chunk, now)

    writer._write = counting  # type: ignore[method-assign]
    for _ in range(3):
        await writer.submit(chunk(), None)  # type: ignore[arg-type]
    await writer.finish()
    assert written == [1, 2]
    assert together.events == ["started", "ended"]


async def test_a_failed_chunk_stops_the_queue_and_raises_at_the_next_submit() -> None:
    failing, queued, later = (
        Statement(error=RuntimeError("unique violation")),
        Statement(),
        Statement(),
    )
    writer = Writer([failing, queued, later])
    await writer.submit(chunk(), None)  # type: ignore[arg-type]
    await writer.submit(chunk(), None)  # type: ignore[arg-type]
    await asyncio.sleep(0.03)
    with pytest.raises(RuntimeError, match="unique violation"):
        await writer.submit(chunk(), None)  # type: ignore[arg-type]
    assert queued.events == later.events == []


async def test_finish_raises_the_error_that_stopped_the_queue() -> None:
    writer = Writer([Statement(error=RuntimeError("refused")), Statement()])
    await writer.submit(chunk(), None)  # type: ignore[arg-type]
    await writer.submit(chunk(), None)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="refused"):
        await writer.finish()


async def test_abandon_waits_for_the_chunk_in_flight_and_writes_no_other() -> None:
    statement = Statement(seconds=0.02, error=RuntimeError("ignored"))
    queued = Statement()
    writer = Writer([statement, queued])
    await writer.submit(chunk(), None)  # type: ignore[arg-type]
    await writer.submit(chunk(), None)  # type: ignore[arg-type]
    await writer.abandon()
    assert statement.events == ["started", "ended"]
    assert queued.events == []
    await writer.finish()  # nothing left in flight
