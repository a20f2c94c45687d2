"""Customer search served by a trigram index, under row-level security.

`customers(filter: {search})` matches a substring of the name or of the email. Without an
index for that, every search read the whole table (about 10 ms for 10,000 customers, the
same for a term that matches nothing). Now one stored column holds what search looks in,
with a trigram GIN index (pg_trgm, a trusted extension since PostgreSQL 13).

Row-level security hides the index from the app role unless the LIKE operator's function
is marked leakproof: PostgreSQL evaluates the policy before any non-leakproof condition, so
it may not probe an index with one. `textlike` raises errors only about its pattern (which
the client sent), never about row data, so it is safe to mark; doing so needs a superuser,
so a migration run by another role leaves it, and search still works, by scanning (see
docs/operations.md). The prefix index is dropped: a prefix match is a substring match.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 18:10:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# What search looks in: the list's sort name and the primary email, apart on two lines so a
# term never matches across them (a generated column may not use another one: sort_name's
# expression is repeated).
SEARCH_TEXT = (
    "lower(coalesce(nullif(business_name, ''),"
    " trim(coalesce(last_name, '') || ' ' || coalesce(first_name, ''))))"
    " || E'\\n' || lower(coalesce(email, ''))"
)


def upgrade() -> None:
    """Column, extension, index; leakproof LIKE where the migrating role may say so."""
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute(
        f"ALTER TABLE customers ADD COLUMN search_text text GENERATED ALWAYS AS ({SEARCH_TEXT})"
        " STORED"
    )
    # A small pending list: GIN queues new entries there and searches scan it whole, so at
    # the default 4 MB a search right after loading 10,000 customers took 17 ms (0.1 ms once
    # merged); without one (fastupdate off) every customer write inserted its ~30 trigrams
    # into the tree, and a push updating 667 customers spent 81 ms instead of 30-43 ms in
    # that UPDATE. 512 kB keeps both small.
    op.execute(
        "CREATE INDEX ix_customers_search_trgm ON customers"
        " USING gin (search_text gin_trgm_ops) WITH (fastupdate = on, gin_pending_list_limit = 512)"
    )
    op.execute(
        """
        DO $$
        BEGIN
          IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            ALTER FUNCTION pg_catalog.textlike(text, text) LEAKPROOF;
          END IF;
        END
        $$
        """
    )
    op.drop_index("ix_customers_org_sort_pattern", table_name="customers")


def downgrade() -> None:
    """Back to the prefix index (the extension and the leakproof mark stay)."""
    op.create_index(
        "ix_customers_org_sort_pattern",
        "customers",
        ["org_id", "sort_name"],
        postgresql_ops={"sort_name": "text_pattern_ops"},
    )
    op.drop_index("ix_customers_search_trgm", table_name="customers")
    op.drop_column("customers", "search_text")
