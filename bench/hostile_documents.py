"""What a hostile document costs to refuse, next to what a real client's document costs.

    python -m bench.hostile_documents [--rounds 20]

Each document is parsed and validated as the server does it (``DocumentValidator``: the
linear depth/alias/repeat/cost check, then graphql-core's rules under the CPU budget), with
a fresh validator each round so nothing is remembered. The baseline, in the same run, is
the frontend bench's customer-list document (50 customers with their trees, the heaviest
query a real client sends). Before the linear check, the 30-level bomb held a core for
minutes; its cost now sits next to the baseline's.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from graphql import parse, specified_rules

from bench.frontend.queries import FIELDSYNC_A
from schema.limits import DocumentValidator, OperationLimits, limit_rules
from server.schema import build_schema


def chain(levels: int, body: str = "...F{n} ...F{n}") -> str:
    """``query{...F0}`` and fragments F0..F<levels>, each spreading the next as ``body``."""
    parts = ["query{...F0}"]
    parts += [f"fragment F{i} on Query{{{body.replace('{n}', str(i + 1))}}}" for i in range(levels)]
    parts.append(f"fragment F{levels} on Query{{__typename}}")
    return " ".join(parts)


DOCUMENTS = {
    "bomb, 30 levels (the report's)": chain(30),
    "bomb, 300 levels": chain(300),
    "bomb, inline fragments": chain(30, "... on Query{...F{n} ... on Query{...F{n}}}"),
    "one fragment spread 2,000 times": "query{"
    + " ".join(["...F"] * 2000)
    + "} fragment F on Query{__typename}",
    "the same field 1,200 times": "query{" + " ".join(["me{id}"] * 1200) + "}",
}


def cpu_ms(document: str, rounds: int) -> tuple[float, list[str]]:
    """Median CPU milliseconds of parse + validate, and the error codes."""
    schema = build_schema()._schema
    limits = OperationLimits()
    rules = [*specified_rules, *limit_rules(limits)]
    samples = []
    codes: list[str] = []
    for _ in range(rounds):
        validator = DocumentValidator(limits)
        gc.collect()
        gc.disable()
        started = time.thread_time()
        errors = validator.validate(schema, parse(document, max_tokens=limits.max_tokens), rules)
        samples.append((time.thread_time() - started) * 1000)
        gc.enable()
        codes = [str((e.extensions or {}).get("code")) for e in errors]
    return statistics.median(samples), codes


def main() -> None:
    """Print each document's cost and its ratio to the baseline."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    rounds = parser.parse_args().rounds
    baseline, _ = cpu_ms(FIELDSYNC_A, rounds)
    print(f"baseline: frontend customer list, {len(FIELDSYNC_A)} chars: {baseline:.2f} ms CPU")
    for name, document in DOCUMENTS.items():
        cost, codes = cpu_ms(document, rounds)
        print(
            f"{name}: {len(document)} chars, {cost:.2f} ms CPU = {cost / baseline:.1f}x the"
            f" baseline, refused with {sorted(set(codes))}"
        )


if __name__ == "__main__":
    main()
