"""The fenced blocks of README.md and docs/*.md (and the TypeScript client's README), with
the `docs-test` markers written next to them; used by tests/test_docs_blocks.py.

A marker is an HTML comment on the lines just above a fence (blank lines between are
fine), invisible on the rendered page:

    <!-- docs-test: skip — why this block cannot run in a test -->
    <!-- docs-test: serve — why (the block's `fieldsync serve` starts the test's server) -->
    <!-- docs-test: as TECHNICIAN -->              GraphQL: sign in as this demo role
    <!-- docs-test: variables {"types": ["ASSET"]} -->   GraphQL: these variable values
    <!-- docs-test: expect Forbidden -->           GraphQL: the refusal the block shows: a
                                                   `UserError` member, a refused push outcome
                                                   or the code of a top-level error (FORBIDDEN)
    <!-- docs-test: status 2 -->                   shell: the documented exit status
    <!-- docs-test: file customers.csv -->         the block is this file's content, written
                                                   where the shell blocks run (not run itself)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHELL = frozenset({"sh", "bash", "shell"})
GRAPHQL = frozenset({"graphql"})
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$")
KINDS = frozenset({"skip", "serve", "as", "variables", "expect", "status", "file"})
# A reason follows `skip` / `serve` after a dash or a colon.
REASON = re.compile("^\\s*(?:\u2014|\u2013|-|:)\\s*(?P<reason>\\S.*)$")
# Commands a reader would paste: an unlabeled block that starts with one is a mistake.
COMMAND_WORDS = ("fieldsync ", "python ", "python3 ", "curl ", "npm ", "node ", "export ", "cd ")


def doc_files() -> list[Path]:
    """The documents whose blocks are run."""
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "clients" / "typescript" / "README.md",
    ]


@dataclass
class Block:
    """One fenced block (or one inline command) of a document."""

    path: str  # relative to the repository
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    markers: dict[str, str] = field(default_factory=dict)
    inline: bool = False

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def kind(self) -> str:
        """graphql, shell, file, serve, skip, or other (not run: ts, json, text...)."""
        if "file" in self.markers:
            return "file"
        if "serve" in self.markers:
            return "serve"
        if "skip" in self.markers:
            return "skip"
        if self.lang in GRAPHQL:
            return "graphql"
        if self.lang in SHELL:
            return "shell"
        return "other"

    @property
    def reason(self) -> str:
        return self.markers.get("skip") or self.markers.get("serve") or ""

    @property
    def variables(self) -> dict[str, Any]:
        raw = self.markers.get("variables")
        return json.loads(raw) if raw else {}

    def shown(self) -> str:
        """The block as a failure message shows it: where, then its lines."""
        fence = "`" if self.inline else f"```{self.lang}"
        return f"{self.where}:\n{fence}\n{self.text}\n{'`' if self.inline else '```'}"


class MarkerError(ValueError):
    """A docs-test marker that is malformed or not next to a block."""


def _parse_marker(body: str, where: str) -> tuple[str, str]:
    kind, _, arg = body.partition(" ")
    kind = kind.rstrip(":")
    if kind not in KINDS:
        raise MarkerError(f"{where}: unknown docs-test marker {body!r} (one of {sorted(KINDS)})")
    if kind in ("skip", "serve"):
        match = REASON.match(arg)
        if not match:
            raise MarkerError(f"{where}: `docs-test: {kind}` needs a reason: {kind} — why")
        return kind, match.group("reason")
    if not arg.strip():
        raise MarkerError(f"{where}: `docs-test: {kind}` needs a value")
    if kind == "variables":
        try:
            value = json.loads(arg)
        except ValueError as exc:
            raise MarkerError(f"{where}: variables are not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise MarkerError(f"{where}: variables must be a JSON object")
    return kind, arg.strip()


def blocks_of(path: Path) -> list[Block]:
    """Every fenced block of ``path`` with its markers (MarkerError for a stray marker)."""
    rel = str(path.relative_to(ROOT))
    lines = path.read_text().splitlines()
    found: list[Block] = []
    pending: dict[str, str] = {}
    pending_at = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.match(line)
        fence = re.match(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$", line)
        if marker:
            kind, arg = _parse_marker(marker.group("body"), f"{rel}:{i + 1}")
            if kind in pending:
                raise MarkerError(f"{rel}:{i + 1}: docs-test {kind!r} given twice for one block")
            pending[kind] = arg
            pending_at = i + 1
        elif fence:
            indent = len(fence.group("indent"))
            end = i + 1
            while end < len(lines) and not re.match(r"^\s*```\s*$", lines[end]):
                end += 1
            if end == len(lines):
                raise MarkerError(f"{rel}:{i + 1}: fence never closed")
            body = [ln[indent:] if ln[:indent].strip() == "" else ln for ln in lines[i + 1 : end]]
            found.append(
                Block(rel, i + 1, fence.group("lang").lower(), "\n".join(body), dict(pending))
            )
            pending = {}
            i = end
        elif line.strip() and pending:
            raise MarkerError(f"{rel}:{pending_at}: docs-test marker is not followed by a block")
        i += 1
    if pending:
        raise MarkerError(f"{rel}:{pending_at}: docs-test marker is not followed by a block")
    return found


INLINE = re.compile(
    r"`(?P<code>(?:fieldsync|curl|python -m) [^`]+)`(?: answers `(?P<answer>[^`]+)`)?"
)


def inline_commands(path: Path) -> list[Block]:
    """Inline code spans that are commands (`fieldsync ...`, `curl ...`, `python -m ...`),
    outside fences."""
    rel = str(path.relative_to(ROOT))
    found: list[Block] = []
    in_fence = False
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines, start=1):
        if re.match(r"^\s*```", line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        # A span may wrap onto the next line (`curl -s\n127.0.0.1:8000/readyz`).
        joined = line + (" " + lines[n].strip() if n < len(lines) else "")
        for match in INLINE.finditer(joined):
            if match.start() >= len(line):
                break
            # "`curl ...` answers `{"status":"ready",...}`": the output starts that way.
            answer = match.group("answer")
            markers = {"output": answer.split("...")[0]} if answer else {}
            found.append(Block(rel, n, "sh", match.group("code"), markers, inline=True))
    return found


def all_blocks() -> list[Block]:
    """Every fenced block of every document, in document order."""
    return [block for path in doc_files() for block in blocks_of(path)]


def unlabeled_commands() -> list[Block]:
    """Blocks not labeled sh or graphql that hold commands: label them so they are run."""
    return [
        b
        for b in all_blocks()
        if b.lang in ("", "text", "console", "shell-session", "zsh")
        and not b.markers
        and any(ln.strip().startswith(COMMAND_WORDS) for ln in b.text.splitlines())
    ]
