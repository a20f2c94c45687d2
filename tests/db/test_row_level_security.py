"""Row-level security is the second wall: without a tenant setting nothing is visible."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select, text

from db.engine import set_tenant
from db.tables import assets, change_log, contacts, customers, facilities, org_seq, orgs, users
from tests.api.queries import make_tree

TABLES = [orgs, org_seq, users, customers, contacts, facilities, assets, change_log]


class TestRowLevelSecurity:
    @pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
    async def test_no_tenant_set_reads_nothing(self, db, tenant, table):
        """A transaction without app.org_id sees no row of any tenant table."""
        await make_tree(tenant.admin)
        async with db.unscoped() as conn:
            assert (await conn.execute(select(table))).all() == []

    @pytest.mark.parametrize(
        "table", [customers, contacts, facilities, assets, users], ids=lambda t: t.name
    )
    async def test_tenant_a_sees_none_of_tenant_b(self, db, tenant, other_tenant, table):
        """Scoped to A, even an unfiltered SELECT returns no row of B."""
        await make_tree(other_tenant.admin)
        async with db.tenant(tenant.org_id) as conn:
            rows = (await conn.execute(select(table.c.org_id))).scalars().all()
        assert set(rows) <= {tenant.org_id}

    async def test_cannot_insert_into_another_tenant(self, db, tenant, other_tenant):
        """WITH CHECK refuses a row whose org_id is not the transaction's tenant."""
        with pytest.raises(Exception, match="row-level security"):
            async with db.tenant(tenant.org_id) as conn:
                await conn.execute(insert(orgs).values(org_id=other_tenant.org_id, name="x"))

    async def test_cannot_update_another_tenants_rows(self, db, tenant, other_tenant):
        """An UPDATE scoped to A touches zero rows of B."""
        await make_tree(other_tenant.admin, name="Theirs")
        async with db.tenant(tenant.org_id) as conn:
            result = await conn.execute(text("UPDATE customers SET archived = true"))
            assert result.rowcount == 0

    async def test_app_role_is_not_owner_and_cannot_bypass(self, db):
        """The app connects as a role without superuser or BYPASSRLS that owns no table."""
        async with db.unscoped() as conn:
            role = (
                await conn.execute(
                    text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
                )
            ).one()
            owned = (
                await conn.execute(
                    text("SELECT count(*) FROM pg_tables WHERE tableowner = current_user")
                )
            ).scalar_one()
        assert tuple(role) == (False, False)
        assert owned == 0

    async def test_force_row_level_security_on_every_table(self, db):
        """RLS is enabled and forced on every table that has an org_id."""
        async with db.unscoped() as conn:
            rows = (
                await conn.execute(
                    text(
                        """SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c
                   JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'org_id'
                   WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace"""
                    )
                )
            ).all()
        assert rows
        assert all(r.relrowsecurity and r.relforcerowsecurity for r in rows), rows

    async def test_scoping_is_per_transaction(self, db, tenant):
        """set_config(..., true) ends with the transaction: the next one sees nothing."""
        await make_tree(tenant.admin)
        async with db.engine.connect() as conn:
            async with conn.begin():
                await set_tenant(conn, tenant.org_id)
                assert (await conn.execute(select(customers))).all()
            async with conn.begin():
                assert (await conn.execute(select(customers))).all() == []
