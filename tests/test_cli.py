"""The CLI: create-admin, reset-password, seed (batched, with progress), source, import,
export-schema."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from rich.progress import BarColumn, Progress

from tests.conftest import LOGIN, PASSWORD, Api


def run_cli(*args, env, timeout=300):
    # stdin is not a terminal (as in CI or a script): nothing may wait for typed input.
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        # Wide enough that rich does not wrap the lines the tests look for.
        env={**env, "COLUMNS": "250"},
        stdin=subprocess.DEVNULL,
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
        assert "Seeded 300 customers" in seeded.stderr
        assert "1500 assets" in seeded.stderr
        assert "SeedCounts(" not in seeded.stderr
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

    def test_create_admin_without_password_or_terminal_says_how(self, database_url, tmp_path):
        """Without --password and without a terminal: exit 2 naming the option (no abort
        waiting for input); --help says when it is asked for."""
        env = {**os.environ, "DATABASE_URL": database_url, "FIELDSYNC_DATA_DIR": str(tmp_path)}
        result = run_cli("create-admin", "--email", "noterm@example.com", env=env)
        assert result.returncode == 2
        assert "No --password given and no terminal to ask on" in result.stderr
        assert "--password P" in result.stderr
        assert "Aborted" not in result.stderr
        help_text = run_cli("create-admin", "--help", env=env).stdout
        assert "required without one" in " ".join(help_text.split())

    async def test_reset_password_prints_a_new_one_and_signs_out(
        self, database_url, tmp_path, tenant
    ):
        """`reset-password EMAIL` sets a random password it prints: it signs in, and a
        token issued before is refused. Unknown emails exit 1."""
        env = {**os.environ, "DATABASE_URL": database_url, "FIELDSYNC_DATA_DIR": str(tmp_path)}
        before = await tenant.admin("{ me { email } }")
        assert before["me"]["email"] == tenant.admin_email
        result = run_cli("reset-password", tenant.admin_email, env=env)
        assert result.returncode == 0, result.stderr
        match = re.search(r"New password of \S+: (\S+)", result.stderr)
        assert match, result.stderr
        new_password = match.group(1)
        anon = Api(tenant.client)
        login = await anon(LOGIN, {"email": tenant.admin_email, "password": new_password})
        assert login["login"]["__typename"] == "LoginSuccess"
        old = await anon(LOGIN, {"email": tenant.admin_email, "password": PASSWORD})
        assert old["login"]["__typename"] == "InvalidCredentials"
        assert await tenant.admin.errors("{ me { email } }")
        chosen = run_cli("reset-password", tenant.admin_email, "--password", PASSWORD, env=env)
        assert chosen.returncode == 0, chosen.stderr
        assert "Password of" in chosen.stderr
        assert PASSWORD not in chosen.stderr
        missing = run_cli("reset-password", "nobody@example.com", env=env)
        assert missing.returncode == 1
        assert "No user with email nobody@example.com" in missing.stderr

    async def test_reset_password_of_a_deactivated_user_says_so(
        self, database_url, tmp_path, tenant
    ):
        """A new password does not undo a deactivation: the command says the user still
        cannot sign in and who can change that."""
        env = {**os.environ, "DATABASE_URL": database_url, "FIELDSYNC_DATA_DIR": str(tmp_path)}
        tech = await tenant.add_user("TECHNICIAN")
        me = (await tech("{ me { id email } }"))["me"]
        await tenant.admin(
            "mutation($id: ID!) { setUserActive(userId: $id, active: false) { __typename } }",
            {"id": me["id"]},
        )
        result = run_cli("reset-password", me["email"], "--password", PASSWORD, env=env)
        assert result.returncode == 0, result.stderr
        assert "is deactivated, so they still cannot sign in" in " ".join(result.stderr.split())
        active = run_cli("reset-password", tenant.admin_email, "--password", PASSWORD, env=env)
        assert "deactivated" not in active.stderr

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


class TestStepProgress:
    def test_single_steps_show_no_count_and_counted_steps_do(self):
        """An import's progress on a terminal: no "0/?" before a step reports and no "0/0"
        for a step with nothing to do; a counted step shows done of total."""
        from io import StringIO

        from rich.console import Console

        from server import cli

        out = StringIO()
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            cli._StepCount(),
            console=Console(file=out, force_terminal=True, width=120),
        ) as bar:
            steps = cli._Steps(bar)
            for step, done, total in [
                ("checking rows", 0, 1),
                ("checking rows", 1, 1),
                ("storing records", 0, 3),
                ("storing records", 3, 3),
                ("applying to customers", 0, 0),
            ]:
                steps(step, done, total)
            assert all(task.finished for task in bar.tasks)
        text = out.getvalue()
        assert "3/3" in text
        assert "0/?" not in text
        assert "0/0" not in text
        assert "1/1" not in text


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

    def test_source_create_list_then_import_with_plain_progress(
        self, database_url, tmp_path, tenant
    ):
        """`source create` registers a source from the CLI, `source list` shows it, and a
        3-row import through it reports no meaningless counts ("0/?", "0/0")."""
        env = {**os.environ, "DATABASE_URL": database_url, "FIELDSYNC_DATA_DIR": str(tmp_path)}
        org = ("--org", str(tenant.org_id))
        created = run_cli(
            "source", "create", "Ledger",
            "--map", "No=externalId", "--map", "Company=businessName", "--map", "Mail=email",
            "--direction", "external_to_local",
            *org,
            env=env,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        assert "Created source 'Ledger'" in created.stderr
        assert "No -> externalId" in created.stderr
        again = run_cli("source", "create", "ledger", "--map", "No=externalId", *org, env=env)
        assert again.returncode == 1
        assert "already exists" in again.stderr
        bad = run_cli("source", "create", "Other", "--map", "No=nonsense", *org, env=env)
        assert bad.returncode == 2
        assert "'nonsense' is not a customer field" in bad.stderr
        listed = run_cli("source", "list", *org, env=env)
        assert listed.returncode == 0, listed.stderr
        assert "Ledger" in listed.stdout
        assert "EXTERNAL_TO_LOCAL" in listed.stdout
        assert "Mail -> email" in listed.stdout
        file = tmp_path / "three.csv"
        file.write_text(
            "No,Company,Mail\n1,Acme,a@acme.example\n2,Bolt,b@bolt.example\n3,Cog,c@cog.example\n"
        )
        imported = run_cli("import", str(file), "--source", "ledger", *org, env=env)
        assert imported.returncode == 0, imported.stderr
        assert "3 rows, 3 new" in imported.stderr
        assert "0/?" not in imported.stderr
        assert "0/0" not in imported.stderr

    def test_import_names_an_unknown_source(self, database_url, tmp_path, tenant):
        """An unknown source name is an error, not an empty import; it says how to add one."""
        env = {**os.environ, "DATABASE_URL": database_url, "FIELDSYNC_DATA_DIR": str(tmp_path)}
        file = tmp_path / "c.csv"
        file.write_text("No\n1\n")
        result = run_cli(
            "import", str(file), "--source", "Nope", "--org", str(tenant.org_id), env=env
        )
        assert result.returncode == 1
        assert "No external source named 'Nope'" in result.stderr
        assert "fieldsync source create" in " ".join(result.stderr.split())
