"""What the subscription benches print so a stall shows as what it is.

- :func:`scrape_lag`: each worker's ``fieldsync_event_loop_lag_seconds`` histogram from
  ``/metrics`` (server/loop_lag.py). A worker has its own registry and a scrape reaches
  whichever worker accepted the connection, so this scrapes over fresh connections until
  every worker (told apart by ``fieldsync_worker_pid``) has answered. Two snapshots give the
  histogram of a phase (:meth:`LagSnapshot.minus`).
- :func:`logged_stalls`: the server log's ``event loop stalled`` and ``long garbage
  collection`` warnings (with their pid and time) inside a window.
- :func:`worker_of_ports`: which server worker holds each client socket (by the client's
  local port), so delivery latency can be split by worker.
- :func:`latency_table`: delivery latency by worker and over time (per bucket of commit
  time: p50 / p99 / max), with the stalls logged in each bucket next to it.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import orjson
import psutil  # type: ignore[import-untyped]

from bench.common import Server, machine
from bench.ws_load import percentile

LAG_METRIC = "fieldsync_event_loop_lag_seconds"
# From the start of a hub read to the rows queued on every socket: a slow database read
# shows here, not in the loop lag.
FANOUT_METRIC = "fieldsync_fanout_lag_seconds"
PID_METRIC = "fieldsync_worker_pid"


@dataclass
class LagHistogram:
    """One worker's cumulative lag histogram: ``le`` bound -> count, plus count and sum."""

    buckets: dict[float, float] = field(default_factory=dict)
    count: float = 0.0
    total: float = 0.0

    def minus(self, before: LagHistogram | None) -> LagHistogram:
        """This histogram less an earlier snapshot of the same worker (a phase's own)."""
        if before is None:
            return self
        return LagHistogram(
            {le: n - before.buckets.get(le, 0.0) for le, n in self.buckets.items()},
            self.count - before.count,
            self.total - before.total,
        )

    def over(self, seconds: float) -> float:
        """Wake-ups more than ``seconds`` late (``seconds`` is one of the bucket bounds)."""
        return self.count - self.buckets.get(seconds, 0.0)

    def worst(self) -> str:
        """The bucket holding the latest wake-ups, e.g. ``100-250 ms``."""
        worst, previous, lo = "none", 0.0, 0.0
        for le in sorted(self.buckets):
            if self.buckets[le] > previous:
                hi = "inf" if le == float("inf") else f"{le * 1000:g}"
                worst = f"{lo * 1000:g}-{hi} ms"
            previous = self.buckets[le]
            lo = le
        return worst

    def summary(self, what: str = "wake-ups") -> str:
        """One line: observations, mean, how many were over 10/50/100/250/500 ms."""
        if self.count <= 0:
            return f"no {what} recorded"
        mean = self.total / self.count
        late = ", ".join(f">{_ms(x)}: {self.over(x):.0f}" for x in (0.01, 0.05, 0.1, 0.25, 0.5))
        return f"{self.count:.0f} {what}, mean {mean * 1000:.1f} ms; {late}; worst {self.worst()}"


# Per worker pid: its loop-lag histogram and its fan-out lag histogram.
LagSnapshot = dict[int, tuple[LagHistogram, LagHistogram]]


def _parse(text: str) -> tuple[int | None, LagHistogram, LagHistogram]:
    pid: int | None = None
    hists = {LAG_METRIC: LagHistogram(), FANOUT_METRIC: LagHistogram()}
    for line in text.splitlines():
        if line.startswith(PID_METRIC + " ") or line.startswith(PID_METRIC + "{"):
            pid = int(float(line.rsplit(" ", 1)[1]))
            continue
        for name, hist in hists.items():
            if line.startswith(name + "_bucket{"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                hist.buckets[float(le)] = float(line.rsplit(" ", 1)[1])
            elif line.startswith(name + "_count"):
                hist.count = float(line.rsplit(" ", 1)[1])
            elif line.startswith(name + "_sum"):
                hist.total = float(line.rsplit(" ", 1)[1])
    return pid, hists[LAG_METRIC], hists[FANOUT_METRIC]


def scrape_lag(server: Server, *, tries: int = 60) -> LagSnapshot:
    """Every worker's histograms now (fresh connections until each worker answered)."""
    wanted = set(server.worker_pids())
    seen: LagSnapshot = {}
    for _ in range(tries):
        with contextlib.suppress(httpx.HTTPError):
            # A new connection each time: the kernel spreads them over the workers.
            response = httpx.get(
                f"{server.url}/metrics", timeout=10, headers={"connection": "close"}
            )
            pid, lag, fanout = _parse(response.text)
            if pid is not None:
                seen[pid] = (lag, fanout)
        if wanted <= set(seen):
            break
    return seen


def lag_lines(before: LagSnapshot, after: LagSnapshot) -> list[str]:
    """Per worker, the loop lag and the fan-out lag of the phase between two snapshots."""
    lines = []
    for pid in sorted(after):
        lag, fanout = after[pid]
        old_lag, old_fanout = before.get(pid, (None, None))
        lines.append(f"worker {pid}: loop lag: {lag.minus(old_lag).summary()}")
        reads = fanout.minus(old_fanout)
        if reads.count > 0:
            lines.append(
                f"worker {pid}: hub read to queued on every socket"
                f" (fieldsync_fanout_lag_seconds): {reads.summary('reads')}"
            )
    return lines


@dataclass(frozen=True)
class Stall:
    """A warning of the server log: a late wake-up or a long collection."""

    at: float  # epoch seconds
    pid: int | None
    kind: str  # "loop" or "gc"
    ms: int
    detail: str = ""


def logged_stalls(log_path: Path, start: float, end: float) -> list[Stall]:
    """The stall and GC-pause warnings the server logged between ``start`` and ``end``."""
    stalls: list[Stall] = []
    with contextlib.suppress(OSError):
        for raw in log_path.read_bytes().splitlines():
            if b"event loop stalled" not in raw and b"long garbage collection" not in raw:
                continue
            try:
                entry = orjson.loads(raw)
                at = datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00"))
            except (orjson.JSONDecodeError, KeyError, ValueError):
                continue
            t = at.timestamp()
            if not start <= t <= end:
                continue
            if entry.get("event") == "event loop stalled":
                stalls.append(Stall(t, entry.get("pid"), "loop", int(entry.get("lag_ms", 0))))
            else:
                stalls.append(
                    Stall(
                        t,
                        entry.get("pid"),
                        "gc",
                        int(entry.get("pause_ms", 0)),
                        f"gen {entry.get('generation')} collected {entry.get('collected')}",
                    )
                )
    return stalls


def worker_of_ports(server: Server) -> dict[int, int]:
    """Client local port -> pid of the server worker holding the other end."""
    port = int(server.url.rsplit(":", 1)[1])
    owners: dict[int, int] = {}
    for pid in server.worker_pids():
        with contextlib.suppress(psutil.Error):
            for conn in psutil.Process(pid).net_connections(kind="tcp"):
                if conn.laddr and conn.laddr.port == port and conn.raddr:
                    owners[conn.raddr.port] = pid
    return owners


@dataclass(frozen=True)
class Sample:
    """One delivered change: commit time, latency, the worker that sent it (0: unknown)."""

    committed: float
    latency: float
    worker: int


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def _dist(values: Sequence[float]) -> str:
    return (
        f"p50 {_ms(percentile(values, 50))}, p99 {_ms(percentile(values, 99))},"
        f" max {_ms(max(values))}"
    )


def latency_table(
    samples: Sequence[Sample], first: float, stalls: Sequence[Stall], bucket_s: float
) -> list[str]:
    """Delivery latency by worker, then per ``bucket_s`` of commit time (with the stalls
    logged in that bucket), as printable lines."""
    if not samples:
        return ["no deliveries joined with a commit"]
    lines = []
    by_worker: dict[int, list[float]] = defaultdict(list)
    for s in samples:
        by_worker[s.worker].append(s.latency)
    for worker in sorted(by_worker):
        values = by_worker[worker]
        name = f"worker {worker}" if worker else "worker unknown"
        lines.append(f"{name}: {len(values):,} changes, {_dist(values)}")
    by_time: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        by_time[int((s.committed - first) // bucket_s)].append(s)
    stalls_at: dict[int, list[Stall]] = defaultdict(list)
    for st in stalls:
        stalls_at[int((st.at - first) // bucket_s)].append(st)
    workers = sorted(w for w in by_worker if w)
    for b in range(min(by_time), max(by_time) + 1):
        rows = by_time.get(b, [])
        cells = [f"+{b * bucket_s:>5.0f}s"]
        if rows:
            cells.append(f"{len(rows):>6,} changes: {_dist([r.latency for r in rows])}")
            for w in workers:
                mine = [r.latency for r in rows if r.worker == w]
                if mine:
                    cells.append(f"[{w}: p99 {_ms(percentile(mine, 99))}]")
        else:
            cells.append("no commits")
        for st in stalls_at.get(b, []):
            what = "loop stall" if st.kind == "loop" else f"GC {st.detail}"
            cells.append(f"<- {what} {st.ms} ms in {st.pid} at +{st.at - first:.1f}s")
        lines.append("  ".join(cells))
    return lines


def load_line() -> str:
    """``uptime``-style load, printed with every figure (the machine is shared)."""
    return f"{time.strftime('%H:%M:%S')} {machine()}"
