"""The CLI: seed (batched, with progress) and export-schema."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.conftest import LOGIN, PASSWORD, Api


def run_cli(*args, env, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class TestSeed:
    def test_seed_writes_customers_through_the_write_path(self, database_url, tmp_path):
        """`fieldsync seed` fills an admin's tenant in batches and reports the counts."""
        env = {**os.environ, "DATABASE_URL": database_url, "FIELDSYNC_DATA_DIR": str(tmp_path)}
        email = "seed-admin@example.com"
        created = run_cli("create-admin", "--email", email, "--password", PASSWORD, env=env)
        assert created.returncode == 0, created.stderr
        start = time.monotonic()
        seeded = run_cli(
            "seed",
            "--customers",
            "300",
            "--assets-per-customer",
            "5",
            "--admin-email",
            email,
            env=env,
        )
        assert seeded.returncode == 0, seeded.stderr
        assert "customers=300" in seeded.stderr
        assert "assets=1500" in seeded.stderr
        assert time.monotonic() - start < 120

    def test_create_admin_refuses_a_taken_email(self, database_url, tmp_path):
        """A second create-admin with the same email exits non-zero with a message."""
        env = {**os.environ, "DATABASE_URL": database_url, "FIELDSYNC_DATA_DIR": str(tmp_path)}
        email = "twice@example.com"
        assert (
            run_cli("create-admin", "--email", email, "--password", PASSWORD, env=env).returncode
            == 0
        )
        again = run_cli("create-admin", "--email", email, "--password", PASSWORD, env=env)
        assert again.returncode == 1
        assert "already exists" in again.stderr

    def test_compact_reports_each_tenant(self, database_url, tmp_path, tenant):
        """`fieldsync compact` walks every tenant and reports its horizon."""
        env = {**os.environ, "DATABASE_URL": database_url, "FIELDSYNC_DATA_DIR": str(tmp_path)}
        result = run_cli("compact", env=env)
        assert result.returncode == 0, result.stderr
        assert f"{tenant.org_id}: horizon" in result.stdout + result.stderr

    def test_export_schema_writes_the_sdl(self, tmp_path):
        """export-schema writes the same SDL the committed file holds."""
        out = tmp_path / "s.graphql"
        result = run_cli("export-schema", "--output", str(out), env=dict(os.environ))
        assert result.returncode == 0, result.stderr
        assert "type Customer" in out.read_text()


class TestLiveServer:
    async def test_live_server_serves_graphql(self, live_server):
        """A `fieldsync serve` process answers login and queries over real HTTP."""
        import httpx

        async with httpx.AsyncClient(base_url=live_server.url) as client:
            data = await Api(client)(
                LOGIN, {"email": live_server.admin_email, "password": live_server.admin_password}
            )
            token = data["login"]["token"]
            me = await Api(client, token)("{ me { email } }")
        assert me["me"]["email"] == live_server.admin_email


class TestImport:
    async def test_import_applies_a_file_then_changes_nothing_then_lists_bad_rows(
        self, database_url, tmp_path, tenant
    ):
        """`fieldsync import FILE --source NAME` imports with progress, a second run of the
        same file changes nothing, and a bad file is refused with its line numbers."""
        created = await tenant.admin(
            """mutation { createExternalSource(input: {name: "Accounting", mapping: [
                 {column: "No", field: "externalId"}, {column: "Company", field: "businessName"},
                 {column: "Mail", field: "email"}]}) { __typename } }"""
        )
        assert created["createExternalSource"]["__typename"] == "ExternalSource"
        env = {**os.environ, "DATABASE_URL": database_url, "FIELDSYNC_DATA_DIR": str(tmp_path)}
        good = tmp_path / "customers.csv"
        good.write_text("No,Company,Mail\n1,Acme,a@acme.example\n2,Bolt,b@bolt.example\n")
        args = ("import", str(good), "--source", "accounting", "--org", str(tenant.org_id))
        first = run_cli(*args, env=env)
        assert first.returncode == 0, first.stderr
        assert "2 rows, 2 new" in first.stderr
        assert "NEW_EXTERNAL 2" in first.stderr
        again = run_cli(*args, env=env)
        assert again.returncode == 0, again.stderr
        assert "nothing changed" in again.stderr
        bad = tmp_path / "bad.csv"
        bad.write_text("No,Company,Mail\n1,Acme,a@acme.example\n1,Acme,not-an-email\n")
        refused = run_cli(
            "import", str(bad), "--source", "Accounting", "--org", str(tenant.org_id), env=env
        )
        assert refused.returncode == 1
        assert "nothing was imported" in refused.stderr
        assert "line 3" in refused.stderr
        assert "duplicate external id '1'" in refused.stderr

    def test_import_names_an_unknown_source(self, database_url, tmp_path, tenant):
        """An unknown source name is an error, not an empty import."""
        env = {**os.environ, "DATABASE_URL": database_url, "FIELDSYNC_DATA_DIR": str(tmp_path)}
        file = tmp_path / "c.csv"
        file.write_text("No\n1\n")
        result = run_cli(
            "import", str(file), "--source", "Nope", "--org", str(tenant.org_id), env=env
        )
        assert result.returncode == 1
        assert "No external source named 'Nope'" in result.stderr
