"""Summarise py-spy ``--format raw`` (folded) profiles of a server worker.

    python -m bench.fold_report PROFILE.folded.txt [--rate 200] [--top 25]

Two views of the same samples:

* **categories**: each sample goes to the first rule that matches its stack (rules are
  checked in order, specific ones first), e.g. "GraphQL parse + validate" holds everything
  under graphql-core's validator;
* **self time by package**: the innermost frame outside the standard library.

py-spy records only samples where the worker runs (idle waits on the database or the socket
are not sampled), so the totals are the worker's CPU time: wall time minus the total is time
spent waiting, mostly on PostgreSQL.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Callable

Frame = tuple[str, str]  # (function, module path such as "graphql/execution/executor.py")
Rule = tuple[str, Callable[[list[Frame]], bool]]

PROJECT = {"db", "resolvers", "schema", "sync", "server"}
NAMES = {
    "graphql": "graphql-core",
    "strawberry": "strawberry",
    "sqlalchemy": "SQLAlchemy",
    "asyncpg": "asyncpg",
    "uvicorn": "uvicorn",
    "starlette": "starlette",
    "email_validator": "email-validator",
    "db": "fieldsync db/",
    "resolvers": "fieldsync resolvers/",
    "schema": "fieldsync schema/",
    "sync": "fieldsync sync/",
    "server": "fieldsync server/",
}


def _has(stack: list[Frame], *, fn: str | None = None, path: str | None = None) -> bool:
    return any((fn is None or f == fn) and (path is None or p.startswith(path)) for f, p in stack)


def _in(stack: list[Frame], *paths: str) -> bool:
    return any(p.startswith(paths) for _, p in stack)


RULES: list[Rule] = [
    (
        "event loop native code (uvloop: socket I/O, asyncpg's Cython protocol parsing rows)",
        lambda s: s[-1][0] == "Runner.run",
    ),
    (
        "response JSON encoding (strawberry encode_json -> stdlib json.dumps)",
        lambda s: _has(s, fn="encode_json") or _in(s, "json/encoder"),
    ),
    (
        "GraphQL parse + validate (the same document on every request, no cache)",
        lambda s: _in(s, "graphql/validation", "graphql/language", "graphql/utilities/type_info"),
    ),
    (
        "GraphQL input coercion (variables -> ChangeInput objects, arguments)",
        lambda s: (
            _in(s, "graphql/execution/values", "graphql/utilities/coerce")
            or _has(s, fn="convert_argument")
            or _has(s, fn="convert_arguments")
        ),
    ),
    (
        "asyncpg: executing statements (bind, prepare lookups, protocol)",
        lambda s: _in(s, "asyncpg") and not _in(s[-1:], "sqlalchemy"),
    ),
    (
        "SQLAlchemy Core: building statements, cache keys, compile, params, result rows",
        lambda s: _in(s, "sqlalchemy"),
    ),
    (
        "sync decision + record validation (sync/*, email-validator)",
        lambda s: _in(s, "sync/", "email_validator"),
    ),
    (
        "pull resolver: PulledChange rows + change_from (strawberry Change objects)",
        lambda s: _has(s, fn="change_from") or _has(s, fn="<listcomp>", path="db/pull.py"),
    ),
    (
        "push result/input objects (result_from, to_push_change, fingerprint, asdict)",
        lambda s: (
            _has(s, fn="result_from")
            or _has(s, fn="to_push_change")
            or _has(s, fn="_jsonable")
            or _has(s, fn="fingerprint")
            or _has(s, fn="asdict")
        ),
    ),
    ("other fieldsync code", lambda s: _module(s[-1][1]) in PROJECT),
    (
        "graphql-core execution: per-field resolve + complete_value (+ strawberry field glue)",
        lambda s: _in(s, "graphql/execution"),
    ),
    ("strawberry view/schema (outside execution)", lambda s: _in(s, "strawberry")),
    ("uvicorn/starlette HTTP", lambda s: _in(s, "uvicorn", "starlette")),
    ("other", lambda s: True),
]

_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def parse_frame(text: str) -> Frame:
    """'fn (path:line)' -> (fn, path relative to site-packages or the project root)."""
    match = _FRAME.match(text)
    if not match:
        return (text, "")
    return (match["fn"], match["file"].rsplit("site-packages/", maxsplit=1)[-1])


def _module(path: str) -> str:
    return path.split("/", maxsplit=1)[0].removesuffix(".py")


def package_of(stack: list[Frame]) -> str:
    """The package of the innermost frame outside the standard library (self time)."""
    if stack[-1][0] == "Runner.run":
        return "event loop native (uvloop, asyncpg protocol)"
    if stack[-1][1].startswith("json/encoder"):
        return "stdlib json (response encoding)"
    for _, path in reversed(stack):
        module = _module(path)
        if not path or module in sys.stdlib_module_names or module.startswith("<"):
            continue
        return NAMES.get(module, module)
    return "standard library / other"


def report(path: str, rate: float, top: int) -> None:
    """Print both views of one profile."""
    categories: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    with open(path) as handle:
        for raw in handle:
            line = raw.rstrip("\n")
            if not line.strip():
                continue
            stack_text, count_text = line.rsplit(" ", 1)
            count = int(count_text)
            stack = [parse_frame(f) for f in stack_text.split(";")]
            total += count
            for name, rule in RULES:
                if rule(stack):
                    categories[name] += count
                    break
            packages[package_of(stack)] += count
            fn, file = stack[-1]
            leaves[f"{fn} ({file})"] += count
    print(f"{path}: {total} samples = {total / rate:.2f}s of worker CPU at {rate:g} Hz")
    print("  by category:")
    for name, count in categories.most_common():
        print(f"  {count / rate:7.2f}s {count / total * 100:5.1f}%  {name}")
    print("  self time by package (innermost frame outside the standard library):")
    for name, count in packages.most_common(12):
        print(f"  {count / rate:7.2f}s {count / total * 100:5.1f}%  {name}")
    print(f"  top {top} functions by self time:")
    for name, count in leaves.most_common(top):
        print(f"  {count / rate:7.2f}s {count / total * 100:5.1f}%  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    for path in args.paths:
        report(path, args.rate, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
