"""GraphiQL served entirely from assets shipped inside this package: no CDN, works offline.

``STATIC_DIR`` holds vendored, minified builds of GraphiQL 3 (its UMD bundle, which
registers the ``GraphiQL`` global) and of React/ReactDOM 18 (UMD production builds),
each with its licence, plus our own ``fieldsync.js``/``fieldsync.css``; its README says
which npm versions they are and how to refresh them. The app mounts that folder under a
static prefix and answers a browser's ``GET /graphql`` with :func:`graphiql_html`.

The page adds a slim sign-in bar above GraphiQL. Signing in runs the API's ``login``
mutation, keeps the token in ``localStorage["fieldsync.token"]`` and from then on the
fetcher sends ``Authorization: Bearer <token>`` with every request (unless the Headers
editor already sets an ``Authorization`` header). ``?query=`` (and ``variables``,
``headers``, ``operationName``) in the page's URL prefill the editors.

Ready-made operations for an admin's daily questions (devices behind or stale, open
conflicts, the credential access report, the sync window's counts) live in
``STATIC_DIR/examples`` as ``.graphql`` files (first line: ``# Title``), each with an
optional ``.json`` of variables next to it. The page gets them in its config: a fresh
browser opens them as tabs, and the bar's "Examples" menu opens any of them in a tab
later. tests/api/test_graphiql_examples.py runs every one as an admin against a real
server, so they keep matching the schema.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

__all__ = ["EXAMPLES_DIR", "STATIC_DIR", "Example", "admin_examples", "graphiql_html"]

STATIC_DIR: Final[Path] = Path(__file__).resolve().parent / "static" / "graphiql"
EXAMPLES_DIR: Final[Path] = STATIC_DIR / "examples"


@dataclass(frozen=True)
class Example:
    """A ready-made GraphiQL operation document with its title and variables."""

    title: str
    query: str
    variables: dict[str, Any]

    def as_tab(self) -> dict[str, str]:
        """What the page's config holds for it (GraphiQL's tab fields, plus the title)."""
        return {
            "title": self.title,
            "query": self.query,
            "variables": json.dumps(self.variables, indent=2) if self.variables else "",
        }


@cache
def admin_examples() -> tuple[Example, ...]:
    """The example operations in ``EXAMPLES_DIR``, in file name order (read once)."""
    found = []
    for path in sorted(EXAMPLES_DIR.glob("*.graphql")):
        query = path.read_text(encoding="utf-8")
        first = query.splitlines()[0] if query else ""
        title = first.removeprefix("#").strip() if first.startswith("#") else path.stem
        variables_file = path.with_suffix(".json")
        variables = (
            json.loads(variables_file.read_text(encoding="utf-8"))
            if variables_file.exists()
            else {}
        )
        found.append(Example(title=title, query=query, variables=variables))
    return tuple(found)


# Load order matters: GraphiQL's UMD bundle reads the React and ReactDOM globals.
_STYLESHEETS: Final = ("graphiql.min.css", "fieldsync.css")
_SCRIPTS: Final = (
    "react.production.min.js",
    "react-dom.production.min.js",
    "graphiql.min.js",
    "fieldsync.js",
)

_PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>fieldsync · GraphiQL</title>
<link rel="icon" href="data:,">
{stylesheets}
</head>
<body>
<form id="fs-auth" class="fs-bar" autocomplete="on">
<span class="fs-brand">fieldsync</span>
<label for="fs-email">Email <input id="fs-email" name="email" type="email" \
autocomplete="username" placeholder="you@example.com" required></label>
<label for="fs-password">Password <input id="fs-password" name="password" type="password" \
autocomplete="current-password" required></label>
<button id="fs-signin" type="submit">Sign in</button>
<button id="fs-signout" type="button" disabled>Sign out</button>
<label for="fs-examples">Examples <select id="fs-examples">\
<option value="">Admin examples…</option></select></label>
<span id="fs-status" class="fs-status" role="status" aria-live="polite"></span>
</form>
<div id="graphiql">Loading GraphiQL…</div>
<noscript>GraphiQL needs JavaScript.</noscript>
<script id="fs-config" type="application/json">{config}</script>
{scripts}
</body>
</html>
"""


def _json_for_html(value: object) -> str:
    """JSON that is safe inside a ``<script>`` element (cannot close it or open a comment)."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def graphiql_html(*, endpoint: str, static_prefix: str) -> str:
    """The GraphiQL page for ``endpoint``, loading its assets only from ``static_prefix``.

    ``endpoint`` is the GraphQL URL the page posts to (e.g. ``"/graphql"``);
    ``static_prefix`` is where ``STATIC_DIR`` is mounted (e.g. ``"/graphiql/static"``).
    """
    prefix = static_prefix.rstrip("/")

    def asset(name: str) -> str:
        return html.escape(f"{prefix}/{name}", quote=True)

    stylesheets = "\n".join(f'<link rel="stylesheet" href="{asset(n)}">' for n in _STYLESHEETS)
    scripts = "\n".join(f'<script src="{asset(n)}"></script>' for n in _SCRIPTS)
    return _PAGE.format(
        stylesheets=stylesheets,
        scripts=scripts,
        config=_json_for_html(
            {"endpoint": endpoint, "examples": [e.as_tab() for e in admin_examples()]}
        ),
    )
