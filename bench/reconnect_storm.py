"""Benchmark: a reconnect storm of subscriptions that are 1,000 changes behind.

Seeds a tenant with ``--behind`` customers (default 1,000: the shared pool) and
``--clients`` devices (default 2,000) in ALL mode (every device syncs the whole pool).
Against ``python -m server serve --workers 2``:

1. every device subscribes from the head checkpoint, the client keeps the last checkpoint
   it was sent (the one it subscribed with when nothing came), and all disconnect;
2. one writer edits every pool customer once over HTTP ``pushChanges`` (``--per-push``
   changes a push): each device is now ``--behind`` changes behind;
3. all clients reconnect at once (every handshake in flight together) with their
   checkpoints; timed until every client holds every edited record **at the version the
   writer committed** (any one missing = not caught up; counted and printed).

For comparison the same storm then runs against the naive strawberry subscription
(``bench.naive_subscriptions``) with ``--naive-clients`` of the devices (default 200; 0
skips it). The issue sets no target for the time; it must complete with nothing missing.

    python -m bench.reconnect_storm [--clients 2000] [--behind 1000] [--timeout 240]
        [--naive-clients 200] [--client-procs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.common import (
    MB,
    Server,
    api_client,
    app_database,
    bench_database,
    log,
    machine,
    running_server,
)
from bench.subscriptions_fanout import (
    PASSWORD,
    RssPeak,
    Writer,
    naive_server,
    seed_devices,
    seed_tenant,
    server_cpu,
    server_rss,
    server_secret,
    wait_server_quiet,
    ws_url,
)
from bench.ws_load import Fleet, Sub, percentile, version_key


@dataclass
class StormResult:
    """One storm against one server."""

    label: str
    clients: int
    changes_behind: int
    connected: int
    failed: int
    retries: int
    caught_up: int
    missing_clients: int
    missing_changes: int
    seconds: float
    connect_p50: float
    connect_max: float
    caught_up_p50: float
    caught_up_p99: float
    changes_received: int
    messages: int
    rss_before: int
    rss_peak: int
    server_cpu_s: float
    client_cpu_s: float
    errors: int
    error_samples: list[str]


async def checkpoints_from_head(
    server: Server, token: str, device_ids: Sequence[str], since: str, args: argparse.Namespace
) -> dict[str, str]:
    """Subscribe every device from ``since``, keep the checkpoint each was sent, disconnect."""
    async with Fleet(args.client_procs) as fleet:
        opened = await fleet.start(
            ws_url(server), token, [Sub(d, since) for d in device_ids], concurrency=200
        )
        if opened["failed"]:
            raise RuntimeError(f"{opened['failed']} subscriptions failed")
        await asyncio.sleep(1)
        await wait_server_quiet(server, within=20)
        report = await fleet.report()
        await fleet.close()
    return {c.device: c.checkpoint or since for c in report.clients}


async def storm(
    label: str,
    server: Server,
    token: str,
    device_ids: Sequence[str],
    checkpoints: dict[str, str],
    expected: dict[str, str | None],
    args: argparse.Namespace,
) -> StormResult:
    """All of ``device_ids`` reconnect at once; timed until each holds every expected version."""
    await wait_server_quiet(server, within=15)
    async with Fleet(args.client_procs) as fleet:
        subs = [Sub(d, checkpoints[d], "written") for d in device_ids]
        rss_before = server_rss(server)
        cpu0, client0 = server_cpu(server), fleet.cpu_seconds()
        with RssPeak(server) as peak:
            started = time.time()
            opened = await fleet.start(
                ws_url(server),
                token,
                subs,
                expectations={"written": expected},
                concurrency=len(subs),
            )
            log(
                f"{label}: {opened['connected']:,} reconnected in {time.time() - started:.1f}s"
                f" ({opened['failed']} failed, {opened['retries']} retries)"
            )
            status = await fleet.wait_caught_up(args.timeout, label=label, log=log)
            report = await fleet.report()
        cpu1, client1 = server_cpu(server), fleet.cpu_seconds()
        await fleet.close()
    done = [c.caught_up_at - started for c in report.clients if c.caught_up_at]
    connects = [c.connected_at - started for c in report.clients if c.connected_at]
    missing = [c for c in report.clients if c.caught_up_at is None]
    return StormResult(
        label=label,
        clients=len(device_ids),
        changes_behind=len(expected),
        connected=opened["connected"],
        failed=opened["failed"],
        retries=opened["retries"],
        caught_up=len(done),
        missing_clients=len(missing),
        missing_changes=sum(c.missing for c in missing),
        seconds=max(done) if done and not missing else time.time() - started,
        connect_p50=percentile(connects, 50) if connects else float("nan"),
        connect_max=max(connects, default=float("nan")),
        caught_up_p50=percentile(done, 50) if done else float("nan"),
        caught_up_p99=percentile(done, 99) if done else float("nan"),
        changes_received=status.changes,
        messages=status.messages,
        rss_before=rss_before,
        rss_peak=peak.peak,
        server_cpu_s=cpu1 - cpu0,
        client_cpu_s=client1 - client0,
        errors=status.error_count,
        error_samples=status.errors[:3],
    )


def print_storm(r: StormResult, workers: int) -> None:
    """The figures of one storm."""
    verdict = "all caught up, none missing" if not r.missing_clients else "INCOMPLETE"
    print(
        f"  {r.label}: {r.clients:,} clients x {r.changes_behind:,} changes behind"
        f" ({r.clients * r.changes_behind:,} change deliveries): {verdict} in {r.seconds:.1f}s"
        f" ({r.missing_clients} clients missing {r.missing_changes:,} changes;"
        f" {r.failed} connects failed, {r.retries} retries)"
    )
    print(
        f"    reconnected p50 {r.connect_p50:.2f}s, last {r.connect_max:.2f}s; caught up p50"
        f" {r.caught_up_p50:.1f}s, p99 {r.caught_up_p99:.1f}s; received {r.changes_received:,}"
        f" changes in {r.messages:,} messages"
        f" ({r.changes_received / max(r.seconds, 1e-9):,.0f} changes/s)"
    )
    print(
        f"    server RSS (workers) {r.rss_before / MB:.0f} MB before, peak {r.rss_peak / MB:.0f}"
        f" MB; server CPU {r.server_cpu_s:.1f}s"
        f" ({r.server_cpu_s / max(r.seconds, 1e-9) / workers:.0%} of {workers} cores);"
        f" client CPU {r.client_cpu_s:.1f}s ({r.client_cpu_s / max(r.seconds, 1e-9):.0%} of"
        f" one core); errors {r.errors}" + (f" e.g. {r.error_samples}" if r.errors else "")
    )


async def run(args: argparse.Namespace, url: str) -> int:
    """Seed, storm the fieldsync server, then the naive baseline; print figures."""
    t_start = time.monotonic()
    start_machine = machine()
    tenant = await seed_tenant(url, args.behind)
    db = app_database(url)
    try:
        device_ids = await seed_devices(db, tenant, [None] * args.clients)
    finally:
        await db.close()
    log(f"seeded {len(tenant.customer_ids):,} customers, {len(device_ids):,} devices (ALL)")
    results: list[StormResult] = []
    with running_server(url, workers=args.workers) as server:
        async with api_client(server) as api:
            await api.login(tenant.email, PASSWORD)
            assert api.token is not None
            token = api.token
            writer = await Writer.create(api)
            checkpoints = await checkpoints_from_head(
                server, token, device_ids, writer.checkpoint, args
            )
            log(f"{len(checkpoints):,} checkpoints recorded; writing {args.behind:,} changes")
            pool = [str(c) for c in tenant.customer_ids]
            for start in range(0, len(pool), args.per_push):
                await writer.push(pool[start : start + args.per_push], "storm")
            expected: dict[str, str | None] = {
                rid: version_key(writer.versions[rid]) for rid in pool
            }
            if not args.skip_fieldsync:
                results.append(
                    await storm("fieldsync", server, token, device_ids, checkpoints, expected, args)
                )
            if args.naive_clients:
                with naive_server(url, server_secret(server), workers=args.workers) as naive:
                    results.append(
                        await storm(
                            "naive",
                            naive,
                            token,
                            device_ids[: args.naive_clients],
                            checkpoints,
                            expected,
                            args,
                        )
                    )
    print()
    print(f"machine: {start_machine} at start; {machine()} at the end")
    print(
        f"reconnect storm: {len(device_ids):,} devices (ALL mode) over a pool of"
        f" {args.behind:,} customers, each edited once ({args.per_push} per pushChanges);"
        f" servers --workers {args.workers}; {args.client_procs} client process(es)"
    )
    for r in results:
        print_storm(r, args.workers)
    if len(results) == 2:
        fs, nv = results
        print(
            f"  per-client catch-up throughput fieldsync/naive ="
            f" {(fs.clients / fs.seconds) / (nv.clients / nv.seconds):.1f}x"
            f" ({fs.clients:,} vs {nv.clients:,} clients)"
        )
    print(f"  total time {time.monotonic() - t_start:.0f}s")
    return 0 if all(r.missing_clients == 0 for r in results) else 1


def main() -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--behind", type=int, default=1000, help="changes (pool customers)")
    parser.add_argument("--per-push", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=240, help="seconds for all to catch up")
    parser.add_argument("--naive-clients", type=int, default=200, help="0 skips the baseline")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--client-procs", type=int, default=1)
    parser.add_argument("--skip-fieldsync", action="store_true", help="only the baseline")
    args = parser.parse_args()
    with bench_database() as url:
        return asyncio.run(run(args, url))


if __name__ == "__main__":
    sys.exit(main())
