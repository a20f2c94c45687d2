"""Convergence through the v2 contract: the seeded simulation of bench/convergence.py at CI size.

Phones edit offline with per-type feeds and concurrent per-type push batches, lose
responses, resolve conflicts on the server side or themselves, change selections, lose
customers to archiving and get feed resets after compaction, while an admin edits online;
afterwards every phone equals the server for its selection and the server equals the
oracle (the invariants are listed in bench/convergence.py). Seeded: a failure reproduces
with the same FIELDSYNC_CONVERGENCE_SEED. `python -m bench.convergence` runs 50 x 200.
"""

from __future__ import annotations

import os
from datetime import timedelta

from bench.convergence import simulate
from db.compaction import compact

SEED = int(os.environ.get("FIELDSYNC_CONVERGENCE_SEED", "20261206"))
PHONES, EDITS = (int(n) for n in os.environ.get("FIELDSYNC_CONVERGENCE", "12x60").split("x", 1))


async def test_phones_converge(db, tenant):
    """Phones x edits (12 x 60 by default) converge to the server and the oracle."""

    async def compact_now() -> None:
        async with db.tenant(tenant.org_id) as conn:
            await compact(conn, tenant.org_id, device_ttl=timedelta(0))

    sim, _, _ = await simulate(tenant, phones=PHONES, edits=EDITS, seed=SEED, compact=compact_now)
    assert sim.figures.resolved_by_phone > 0
    assert sim.figures.resolved_by_admin > 0
