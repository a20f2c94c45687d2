"""Every command in README.md and docs/*.md runs, so the docs cannot drift from the code.

The fenced ```sh / ```bash / ```shell and ```graphql blocks of README.md, docs/*.md and
clients/typescript/README.md (extracted by tests/docs_blocks.py) run against ONE demo
server: `fieldsync serve --demo` as the README's first block starts it, on a scratch
database of the suite's PostgreSQL (DATABASE_URL's server, else the embedded one).

- GraphQL blocks are sent over HTTP (subscriptions over graphql-transport-ws), each
  operation of a block in turn, signed in as a demo account of the block's role (ADMIN
  unless `<!-- docs-test: as ROLE -->`), with the block's variables from the marker or from
  VARIABLES below. `__typename` is added to every selection so that a refusal the block
  does not select is seen. A block passes with no GraphQL error, no typed refusal (a
  `UserError` member) other than the one its `expect` marker names, and no push change
  refused.
- Shell blocks run in bash (`set -eo pipefail`) on a terminal (a pty: prompts such as
  create-admin's hidden password are answered), in a directory holding the files of the
  `file` markers, with the placeholders of `_placeholders` replaced (the demo server's
  address, the scratch database, a scratch tenant whose admin is admin@dealer.example),
  against the demo server's database, and must exit 0 (or their `status` marker). Inline
  `curl ...` spans run the same way (and start with the answer the docs quote); inline
  `fieldsync ...` spans are checked against the CLI's own commands and options, and the
  README's Configuration table against the settings.
- A block is skipped only by a `<!-- docs-test: skip — reason -->` marker next to it, or,
  in a file this test does not own, by SKIPPED below; pytest reports each with its reason.
  A new block without a marker is run.

GraphQL blocks run before shell blocks: the shell blocks change what the server holds
(`rotate-keys` re-wraps the demo credentials) and nothing runs after them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import json
import os
import pty
import re
import select
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import (
    FieldNode,
    NameNode,
    OperationDefinitionNode,
    SelectionSetNode,
    build_schema,
    parse,
    print_ast,
    visit,
)
from graphql.language import Visitor
from sqlalchemy import make_url, text

from tests.conftest import PASSWORD, PASSWORD_HASH, ServerProcess, free_port, stop_server
from tests.docs_blocks import (
    ROOT,
    Block,
    all_blocks,
    doc_files,
    inline_commands,
    unlabeled_commands,
)

# Blocks of files this test's owners do not edit, skipped here with the reason (path,
# a line of the block): the client package's own development and benchmark commands.
SKIPPED = {
    ("clients/typescript/README.md", "python -m server seed --customers 5000"): (
        "a benchmark: seeds 100,000 assets and runs for minutes"
    ),
    ("clients/typescript/README.md", "npm ci"): (
        "installs npm packages from the registry; tests/clients/test_typescript_client.py"
        " runs these steps"
    ),
    ("clients/typescript/README.md", "integration/scenario.mjs"): (
        "needs the built package (npm ci, build); tests/clients/test_typescript_client.py"
        " runs the scenario against a server"
    ),
}
SCRATCH_ADMIN = "admin@dealer.example"
SCHEMA = build_schema((ROOT / "schema.graphql").read_text())
REFUSALS = frozenset(t.name for t in SCHEMA.get_possible_types(SCHEMA.get_type("UserError")))
REFUSED_OUTCOMES = frozenset({"VALIDATION_FAILED", "FORBIDDEN", "NOT_TRIED"})
SHELL_TIMEOUT = 120
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")
# A hidden-input prompt; getpass writes the trailing space once echo is off.
PROMPT = re.compile(r"(Password|Repeat for confirmation): $")

BLOCKS = all_blocks()
INLINE = [b for path in doc_files() for b in inline_commands(path)]


def _table_skip(block: Block) -> str | None:
    for (path, line), reason in SKIPPED.items():
        if block.path == path and line in block.text:
            return reason
    return None


def _runnable(kinds: set[str]) -> list[Block]:
    return [b for b in BLOCKS if b.kind in kinds]


# --- the demo server ----------------------------------------------------------------------


@dataclass
class Demo:
    """The demo server, its database and the accounts it printed."""

    url: str
    database_url: str
    data_dir: Path
    workdir: Path  # where shell blocks run
    accounts: dict[str, tuple[str, str]]  # role -> (email, password), first of each role
    output: str
    scratch_org: str = ""
    tokens: dict[str, str] = field(default_factory=dict)
    devices: dict[str, str] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    def token(self, role: str) -> str:
        """A bearer token of the demo account of ``role``."""
        if role not in self.tokens:
            assert role in self.accounts, f"the demo prints no {role} account: {self.accounts}"
            email, password = self.accounts[role]
            body = httpx.post(
                f"{self.url}/graphql",
                json={
                    "query": "mutation($e: String!, $p: String!) { login(email: $e,"
                    " password: $p) { ... on LoginSuccess { token } } }",
                    "variables": {"e": email, "p": password},
                },
                timeout=30,
            ).json()
            self.tokens[role] = body["data"]["login"]["token"]
        return self.tokens[role]

    def device(self, role: str) -> str:
        """A device registered for the demo account of ``role`` (the `$d` of sync blocks)."""
        if role not in self.devices:
            body = self.post(
                role,
                'mutation { registerDevice(input: {name: "docs test", platform: "pytest"})'
                " { ... on Device { id } } }",
                {},
            )
            self.devices[role] = body["data"]["registerDevice"]["id"]
        return self.devices[role]

    def post(
        self, role: str, query: str, variables: dict[str, Any], operation: str | None = None
    ) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables, "operationName": operation},
            headers={"Authorization": f"Bearer {self.token(role)}"},
            timeout=60,
        )
        body: dict[str, Any] = response.json()
        body["_status"] = response.status_code
        return body


async def _admin_sql(server_url: str, statement: str) -> None:
    from db.engine import create_engine, to_async_url

    engine = create_engine(to_async_url(server_url), pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _scratch_tenant(url: str) -> str:
    from db.engine import Database
    from db.seed import create_org_with_admin

    db = Database.connect(url, app_role="fieldsync_app", app_password=None, pool_size=1)
    try:
        org_id = await create_org_with_admin(
            db, org_name="Docs Dealer", email=SCRATCH_ADMIN, password_hash=PASSWORD_HASH
        )
    finally:
        await db.close()
    return str(org_id)


def _serve_command() -> list[str]:
    """The `fieldsync serve ...` of the README block marked `docs-test: serve`."""
    served = [b for b in BLOCKS if b.kind == "serve"]
    assert len(served) == 1, f"one block must be marked docs-test: serve, found {served}"
    for part in re.split(r"&&|\n", served[0].text):
        words = shlex.split(part)
        if words[:2] == ["fieldsync", "serve"]:
            return words[1:]
    pytest.fail(f"the serve block has no `fieldsync serve` command:\n{served[0].shown()}")


def _clean_env() -> dict[str, str]:
    """A new user's environment: no fieldsync settings, no database, no keys."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FIELDSYNC_") and k != "DATABASE_URL"
    }
    env.pop("XDG_RUNTIME_DIR", None)
    return {**env, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


@pytest.fixture(scope="module")
def demo(database_url: str) -> Iterator[Demo]:
    """`fieldsync serve --demo` (the README's command) on a fresh database of the suite's
    PostgreSQL, stopped by its pid afterwards; then a scratch tenant for the CLI blocks."""
    server_url = make_url(database_url).set(database="postgres")
    name = f"fieldsync_docs_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin_sql(server_url.render_as_string(False), f'CREATE DATABASE "{name}"'))
    url = server_url.set(database=name).render_as_string(False)
    root = Path(tempfile.mkdtemp(prefix="fieldsync-docs-"))
    data_dir, workdir = root / "data", root / "work"
    workdir.mkdir()
    port = free_port()
    log = root / "server.log"
    env = {**_clean_env(), "DATABASE_URL": url, "FIELDSYNC_DATA_DIR": str(data_dir)}
    command = [sys.executable, "-m", "server", *_serve_command()]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if httpx.get(f"{server.url}/readyz", timeout=1).json().get("status") == "ready":
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the demo server did not start ({command}):\n{server.output()}")
            time.sleep(0.2)
        output = server.output()
        accounts: dict[str, tuple[str, str]] = {}
        for role, email, password in re.findall(
            r"^\s+(ADMIN|TECHNICIAN|PORTAL)\s+(\S+@\S+)\s+password: (\S+)$", output, re.M
        ):
            accounts.setdefault(role, (email, password))
        assert "ADMIN" in accounts, f"the demo printed no admin account:\n{output}"
        found = Demo(server.url, url, data_dir, workdir, accounts, output)
        found.scratch_org = asyncio.run(_scratch_tenant(url))
        for block in BLOCKS:
            if block.kind == "file":
                (workdir / block.markers["file"]).write_text(block.text + "\n")
        yield found
    finally:
        stop_server(server)
        asyncio.run(
            _admin_sql(
                server_url.render_as_string(False), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
            )
        )
        shutil.rmtree(root, ignore_errors=True)


# --- GraphQL blocks -----------------------------------------------------------------------


def _with_typename(document: str) -> tuple[str, list[OperationDefinitionNode]]:
    """The document with `__typename` in every selection below the root fields."""
    ast = parse(document)
    roots = {
        id(op.selection_set) for op in ast.definitions if isinstance(op, OperationDefinitionNode)
    }

    class AddTypename(Visitor):
        def enter_selection_set(self, node: SelectionSetNode, *_: Any) -> SelectionSetNode | None:
            if id(node) in roots:
                return None
            if any(
                isinstance(s, FieldNode) and s.name.value == "__typename" and not s.alias
                for s in node.selections
            ):
                return None
            typename = FieldNode(name=NameNode(value="__typename"), arguments=(), directives=())
            return SelectionSetNode(selections=(*node.selections, typename))

    changed = visit(ast, AddTypename())
    operations = [d for d in changed.definitions if isinstance(d, OperationDefinitionNode)]
    return print_ast(changed), operations


def _variables(demo: Demo, block: Block, op: OperationDefinitionNode, role: str) -> dict[str, Any]:
    """Values of the operation's variables: the block's marker, else VARIABLES."""
    given = block.variables
    values: dict[str, Any] = {}
    for definition in op.variable_definitions or ():
        name = definition.variable.name.value
        type_ = print_ast(definition.type)
        if name in given:
            values[name] = given[name]
        elif (name, type_) in VARIABLES:
            values[name] = VARIABLES[name, type_](demo, role)
        else:
            pytest.fail(
                f"{block.where}: no value for ${name}: {type_}: give it next to the block"
                f' (<!-- docs-test: variables {{"{name}": ...}} -->) or in VARIABLES'
                f"\n{block.shown()}",
                pytrace=False,
            )
    return values


def _next_change(demo: Demo, role: str) -> list[dict[str, Any]]:
    """One new customer, as a phone pushes it (the device's next counter)."""
    demo.device(role)
    demo.counters[role] = demo.counters.get(role, 0) + 1
    return [
        {
            "clientMutationId": str(uuid.uuid4()),
            "recordId": str(uuid.uuid4()),
            "op": "UPSERT",
            "baseVersion": None,
            "counter": demo.counters[role],
            "patch": {"customer": {"businessName": f"Docs Test {demo.counters[role]}"}},
        }
    ]


# Variables the documents use without giving values: (name, type) -> value.
VARIABLES = {
    ("d", "ID!"): lambda demo, role: demo.device(role),
    ("since", "String"): lambda demo, role: None,
    ("types", "[SyncEntity!]"): lambda demo, role: None,
    ("input", "RegisterDeviceInput!"): lambda demo, role: {
        "name": "Docs test phone",
        "platform": "Android",
    },
    ("changes", "[ChangeInput!]!"): _next_change,
}


def _refusals(value: Any, path: str = "data") -> list[tuple[str, str]]:
    """Typed refusals and refused push outcomes anywhere in a result (``data``): (the
    refusal's type name or outcome, where and what)."""
    found: list[tuple[str, str]] = []
    if isinstance(value, dict):
        typename = value.get("__typename")
        if typename in REFUSALS:
            found.append((typename, f"{path}: {json.dumps(value)}"))
        outcome = value.get("outcome")
        if typename == "ChangeResult" and outcome in REFUSED_OUTCOMES:
            found.append((outcome, f"{path}: push outcome {json.dumps(value)}"))
        if typename is None and path != "data":
            return found  # a JSON scalar (record data), not an object of the schema
        for key, item in value.items():
            found += _refusals(item, f"{path}.{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            found += _refusals(item, f"{path}[{n}]")
    return found


def _subscribe(
    demo: Demo, role: str, query: str, variables: dict[str, Any], operation: str | None
) -> dict[str, Any]:
    """Subscribe over graphql-transport-ws; the first message for the operation."""
    from websockets.sync.client import connect

    ws_url = demo.url.replace("http://", "ws://", 1) + "/graphql"
    with connect(ws_url, subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:

        def receive() -> dict[str, Any]:
            while True:
                message: dict[str, Any] = json.loads(ws.recv(timeout=30))
                if message.get("type") != "ping":
                    return message
                ws.send(json.dumps({"type": "pong"}))

        init = {"authorization": f"Bearer {demo.token(role)}"}
        ws.send(json.dumps({"type": "connection_init", "payload": init}))
        assert receive() == {"type": "connection_ack"}
        payload = {"query": query, "variables": variables, "operationName": operation}
        ws.send(json.dumps({"id": "docs", "type": "subscribe", "payload": payload}))
        message = receive()
        ws.send(json.dumps({"id": "docs", "type": "complete"}))
    if message.get("type") == "error":
        return {"errors": message.get("payload")}
    assert message.get("type") == "next", message
    return message["payload"]  # type: ignore[no-any-return]


def _run_graphql(demo: Demo, block: Block) -> None:
    role = block.markers.get("as", "ADMIN").upper()
    expected = block.markers.get("expect")
    document, operations = _with_typename(block.text)
    assert operations, f"{block.where}: no operation in the block\n{block.shown()}"
    for op in operations:
        name = op.name.value if op.name else None
        label = f"{block.where} (operation {name or 'anonymous'}, as {role})"
        variables = _variables(demo, block, op, role)
        if op.operation.value == "subscription":
            body = _subscribe(demo, role, document, variables, name)
        else:
            body = demo.post(role, document, variables, name)
        problems = []
        if body.get("_status", 200) != 200:
            problems.append(f"HTTP {body['_status']}")
        errors = body.get("errors") or []
        codes = {(e.get("extensions") or {}).get("code") for e in errors}
        if errors and not (expected and codes == {expected}):
            problems.append(f"GraphQL errors: {json.dumps(errors, indent=1)}")
        elif expected and codes == {expected}:
            pass  # the top-level error the block shows (a query's FORBIDDEN, say)
        elif body.get("data") is None:
            problems.append(f"no data: {body}")
        else:
            refused = _refusals(body["data"])
            if expected and not any(name == expected for name, _ in refused):
                problems.append(f"the block shows {expected}, the server answered {body}")
            unexpected = [what for name, what in refused if name != expected]
            if unexpected:
                problems.append("refused: " + "; ".join(unexpected))
        if problems:
            pytest.fail(
                f"{label}: {' / '.join(problems)}\nvariables: {json.dumps(variables)}"
                f"\n--- block ---\n{block.shown()}",
                pytrace=False,
            )


# --- shell blocks -------------------------------------------------------------------------


def _placeholders(demo: Demo) -> dict[str, str]:
    """Placeholder in the docs -> its value in this run (longest first when replacing)."""
    address = demo.url.removeprefix("http://")
    return {
        "postgresql://owner:secret@db.example:5432/fieldsync": shlex.quote(demo.database_url),
        "http://127.0.0.1:8000": demo.url,
        "127.0.0.1:8000": address,
        "<tenant id>": demo.scratch_org,
        "<admin>": SCRATCH_ADMIN,
    }


def _substitute(demo: Demo, block: Block) -> str:
    script = block.text
    for placeholder, value in sorted(_placeholders(demo).items(), key=lambda item: -len(item[0])):
        script = script.replace(placeholder, value)
    unknown = re.findall(r"<[a-z][a-z ]*>", script)
    if unknown:
        pytest.fail(
            f"{block.where}: placeholder {unknown[0]} has no value in PLACEHOLDERS\n"
            f"{block.shown()}",
            pytrace=False,
        )
    return script


def _run_on_terminal(script: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """bash on a pty (a user's terminal); hidden-password prompts are answered."""
    leader, follower = pty.openpty()
    # A wide terminal: rich wraps its messages at the terminal's width.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    process = subprocess.Popen(
        ["bash", "-c", "set -eo pipefail\n" + script],
        cwd=cwd,
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        start_new_session=True,  # no controlling terminal: prompts read the pty, never ours
    )
    os.close(follower)
    output = b""
    answered = 0  # output up to here has had its prompt answered
    deadline = time.monotonic() + SHELL_TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    chunk = b""
                if not chunk and process.poll() is not None:
                    break
                output += chunk
                tail = ANSI.sub("", output[answered:].decode(errors="replace"))
                if PROMPT.search(tail.rsplit("\n", 1)[-1]):
                    answered = len(output)
                    os.write(leader, PASSWORD.encode() + b"\n")
            elif process.poll() is not None:
                break
        else:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            return -1, ANSI.sub("", output.decode(errors="replace")) + "\n[timed out]"
        return process.wait(timeout=10), ANSI.sub("", output.decode(errors="replace"))
    finally:
        os.close(leader)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _run_shell(demo: Demo, block: Block) -> None:
    script = _substitute(demo, block)
    bin_dir = Path(sys.executable).parent  # `fieldsync` and `python` of this environment
    env = {
        **_clean_env(),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        # A user's terminal in the repository next to the demo server: its database.
        "DATABASE_URL": demo.database_url,
        "FIELDSYNC_DATA_DIR": str(demo.data_dir),
    }
    expected = int(block.markers.get("status", "0"))
    status, output = _run_on_terminal(script, demo.workdir, env)
    answer = block.markers.get("output")
    if status != expected or (answer and answer not in output):
        said = f"exit status {status}, documented {expected}"
        if answer and answer not in output:
            said = f"the docs say it answers {answer!r}..."
        pytest.fail(
            f"{block.where}: {said}"
            f"\n--- block ---\n{block.shown()}\n--- as run ---\n{script}\n--- output ---\n{output}",
            pytrace=False,
        )


# --- the tests ----------------------------------------------------------------------------

ORDERED = (
    _runnable({"serve"})
    + _runnable({"graphql"})
    + _runnable({"shell"})
    + [b for b in INLINE if b.text.startswith("curl ")]
    + _runnable({"skip"})
)


@pytest.mark.parametrize("block", ORDERED, ids=lambda b: f"{b.where}-{b.lang}")
def test_block(request: pytest.FixtureRequest, block: Block) -> None:
    """The block runs against the demo server as the docs say (see the module docstring)."""
    reason = block.reason if block.kind == "skip" else _table_skip(block)
    if reason:
        pytest.skip(f"{block.where}: {reason}")
    demo: Demo = request.getfixturevalue("demo")
    if block.kind == "serve":
        # The fixture started the server with this block's command: it printed the demo
        # accounts and where to sign in.
        assert "Demo tenant seeded" in demo.output, demo.output
        assert f"{demo.url}/graphql" in demo.output, demo.output
        return
    try:
        if block.kind == "graphql":
            _run_graphql(demo, block)
        else:
            _run_shell(demo, block)
    except Exception as exc:  # noqa: BLE001 -- anything unexpected: still say which block
        pytest.fail(f"{block.where}: {type(exc).__name__}: {exc}\n{block.shown()}")


def test_no_block_without_a_decision() -> None:
    """Blocks of commands are labeled (so they run), and the skip table names real blocks."""
    unlabeled = unlabeled_commands()
    assert not unlabeled, "label these blocks ```sh (or ```graphql) so they run:\n" + "\n".join(
        b.shown() for b in unlabeled
    )
    shell = [b for b in BLOCKS if b.kind in ("shell", "graphql")]
    for (path, line), reason in SKIPPED.items():
        assert any(b.path == path and line in b.text for b in shell), (
            f"SKIPPED names no block of {path} containing {line!r} ({reason})"
        )


def _cli_commands() -> dict[tuple[str, ...], set[str]]:
    """Every `fieldsync` command path with its options."""
    import typer

    from server.cli import app

    found: dict[tuple[str, ...], set[str]] = {}

    def walk(command: Any, path: tuple[str, ...]) -> None:
        # Typer's own click (typer._click) or click itself: groups have `commands`.
        found[path] = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def test_inline_fieldsync_commands_match_the_cli() -> None:
    """Every inline `fieldsync ...` in README and docs names a real command and options it has,
    and every `python -m ...` a module (fenced ones are run by test_block)."""
    commands = _cli_commands()
    wrong = []
    for block in INLINE:
        words = block.text.split()
        if words[:2] == ["python", "-m"]:
            if "<" not in words[2] and importlib.util.find_spec(words[2]) is None:
                wrong.append(f"{block.where}: `{block.text}`: no module {words[2]}")
            continue
        if words[0] != "fieldsync":
            continue
        path: tuple[str, ...] = ()
        for word in words[1:]:
            if (*path, word) in commands:
                path = (*path, word)
            else:
                break
        if not path:
            wrong.append(f"{block.where}: `{block.text}`: no such command")
            continue
        for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", block.text):
            if option not in commands[path] and option != "--help":
                wrong.append(
                    f"{block.where}: `{block.text}`: `fieldsync {' '.join(path)}` has no {option}"
                )
    assert not wrong, "\n".join(wrong)


def test_configuration_table_matches_the_settings() -> None:
    """README's Configuration table has a row for every setting, and it and the tables of
    docs/operations.md give the code's defaults."""
    from server.settings import Settings

    fields = Settings.model_fields
    documented: set[str] = set()
    wrong = []
    rows = [
        (f"{doc}:{n}", line, doc == "README.md")
        for doc in ("README.md", "docs/operations.md")
        for n, line in enumerate((ROOT / doc).read_text().splitlines(), start=1)
        if line.startswith(("| `FIELDSYNC_", "| `DATABASE_URL`"))
    ]
    for where, line, in_readme in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = re.findall(r"`(\w+)`", cells[0])
        defaults = re.findall(r"`([^`]*)`", cells[1])
        for i, name in enumerate(names):
            key = name.lower().removeprefix("fieldsync_")
            if in_readme:
                documented.add(key)
            if key not in fields:
                wrong.append(f"{where}: {name} is not a setting")
                continue
            default = fields[key].default
            if default in (None, "") or i >= len(defaults):
                continue  # "unset: ..." / "empty: ...", described in words
            code = str(default).lower() if isinstance(default, bool) else str(default)
            if defaults[i] != code:
                wrong.append(f"{where}: {name} defaults to {code!r}, not {defaults[i]!r}")
    wrong += [
        f"README.md: no row for FIELDSYNC_{key.upper()}" for key in fields if key not in documented
    ]
    assert not wrong, "\n".join(wrong)
