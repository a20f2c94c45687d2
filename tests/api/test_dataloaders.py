"""Nested reads cost a constant number of SQL statements, whatever the page size."""

from __future__ import annotations

from db.seed import seed_records

TREE = """query($first: Int!) { customers(first: $first) { edges { node {
  id displayName badges { icon } customFields { key value }
  contacts { id firstName customFields { key } }
  facilities { id name assets { id kind customFields { key value } } } } } } }"""


class TestNoNPlusOne:
    async def test_statement_count_does_not_grow_with_the_page(self, db, tenant, statements):
        """50 customers with contacts, facilities and assets cost as many statements as 2."""
        await seed_records(
            db,
            tenant.org_id,
            customers_count=50,
            contacts_per_customer=2,
            facilities_per_customer=2,
            assets_per_customer=3,
        )
        counts = {}
        for first in (2, 50):
            statements.reset()
            data = await tenant.admin(TREE, {"first": first})
            edges = data["customers"]["edges"]
            assert len(edges) == first
            assert all(len(e["node"]["facilities"]) == 2 for e in edges)
            counts[first] = statements.count
        assert counts[50] == counts[2], counts
        # set_config + user; set_config + READ ONLY; page, contacts, facilities, assets,
        # custom field definitions: a small constant, whatever the page size.
        assert counts[50] <= 11, statements.statements
