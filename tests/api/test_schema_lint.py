"""schema.graphql passes graphql-schema-linter with the committed configuration.

The linter and its version are pinned in tests/js/package.json; its rules (descriptions of
every type, field, argument, input field and enum value, naming, the Relay connection
shapes, deprecation reasons) and the ones turned off, each with its reason, are in
tests/js/.graphql-schema-linterrc.yml.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

SDL = Path(__file__).resolve().parents[2] / "schema.graphql"


def test_committed_schema_passes_the_schema_linter(js_packages: Path) -> None:
    """Fails with the linter's report: fix the schema code, then `fieldsync export-schema`."""
    linter = js_packages / "node_modules" / ".bin" / "graphql-schema-linter"
    done = subprocess.run(
        [str(linter), "--config-directory", str(js_packages), "--format", "text", str(SDL)],
        cwd=js_packages,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
