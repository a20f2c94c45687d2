"""Pull pages: one function that starts a page, and an index of archived customers.

Before its page statement a pull read the device with the tenant's compaction horizon,
locked the device (FOR KEY SHARE), read the head seq, then asked whether any customer became
visible to the device after the checkpoint (the page's backfill) while setting the page's
planner settings: four round trips (and three statements SQLAlchemy built anew) on every
page. ``fieldsync_pull_start`` does the four in one call, in the same order and with the
same locks: in a read-committed transaction each statement of a volatile function takes a
fresh snapshot, so the head is still read after the lock is granted (a selection change
that committed while the pull waited for the lock is below the head).

Once the device is locked the function applies the caller's transaction-local settings
(``p_setting_names``/``p_setting_values``). A device in SELECTED mode whose user may no
longer select is neither locked nor set up: the caller switches it back to ALL under an
exclusive lock first (``db.commands.sync.pull``).

The backfill test is the page statement's selection (``db.pull.SELECTION``) asked whether
any customer became visible after ``p_since`` at or below the head; ``tests/db/
test_pull_start.py`` compares the two.

``ix_customers_org_archived``: a pull in ALL mode reads, once per page, the few customers
whose rows it must leave out (``db.pull.HIDDEN``), among them the archived ones.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 19:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

SIGNATURE = "fieldsync_pull_start(uuid, uuid, uuid, boolean, bigint, text[], text[])"


def upgrade() -> None:
    """Create the function (invoker's rights: row-level security applies as to any read)
    and the index."""
    op.execute(
        """
        CREATE FUNCTION fieldsync_pull_start(
          p_org uuid, p_user uuid, p_device uuid, p_may_select boolean, p_since bigint,
          p_setting_names text[], p_setting_values text[])
        RETURNS TABLE (
          locked boolean, mode text, mode_since bigint, selected_since bigint,
          positions jsonb, compacted bigint, head bigint, backfill boolean)
        LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
          d record;
          since bigint;
        BEGIN
          SELECT dv.user_id, dv.active, dv.selection_mode, o.compacted_seq
            INTO d
            FROM devices dv JOIN orgs o ON o.org_id = dv.org_id
           WHERE dv.org_id = p_org AND dv.id = p_device;
          IF NOT FOUND OR d.user_id <> p_user OR NOT d.active THEN
            RETURN;
          END IF;
          compacted := d.compacted_seq;
          IF d.selection_mode = 'SELECTED' AND NOT p_may_select THEN
            locked := false;
            RETURN NEXT;
            RETURN;
          END IF;
          SELECT dv.user_id, dv.active, dv.selection_mode, dv.mode_since_seq,
                 dv.selected_since_seq, dv.feed_positions
            INTO d
            FROM devices dv
           WHERE dv.org_id = p_org AND dv.id = p_device
             FOR KEY SHARE;
          IF NOT FOUND OR d.user_id <> p_user OR NOT d.active THEN
            RETURN;
          END IF;
          -- The caller's settings for the rest of the transaction (transaction-local).
          PERFORM set_config(n, v, true) FROM unnest(p_setting_names, p_setting_values) AS s(n, v);
          locked := true;
          mode := d.selection_mode;
          mode_since := d.mode_since_seq;
          selected_since := d.selected_since_seq;
          positions := d.feed_positions;
          SELECT coalesce(max(s.last_seq), 0) INTO head FROM org_seq s WHERE s.org_id = p_org;
          IF p_since IS NULL OR p_since > head THEN
            RETURN NEXT;
            RETURN;
          END IF;
          -- A checkpoint older than the compaction horizon starts the feed over.
          since := CASE WHEN p_since > 0 AND p_since < compacted THEN 0 ELSE p_since END;
          backfill := EXISTS (
            SELECT 1 FROM customers c
             WHERE c.org_id = p_org AND mode = 'ALL' AND mode_since > since AND NOT c.archived
               AND GREATEST(mode_since, c.restored_seq) <= head
            UNION ALL
            SELECT 1 FROM customers c
             WHERE c.org_id = p_org AND mode = 'ALL' AND mode_since <= since
               AND c.restored_seq > since AND c.restored_seq > 0 AND NOT c.archived
               AND c.restored_seq <= head
            UNION ALL
            SELECT 1 FROM device_customers dc
              JOIN customers c ON c.org_id = dc.org_id AND c.id = dc.customer_id
             WHERE dc.org_id = p_org AND dc.device_id = p_device AND mode = 'SELECTED'
               AND dc.selected AND NOT c.archived
               AND GREATEST(dc.changed_seq, c.restored_seq) > since
               AND GREATEST(dc.changed_seq, c.restored_seq) <= head);
          -- Only an initial sync with nothing to backfill runs its page statement under a
          -- generic plan (db.pull.PAGE_SETUP says why).
          PERFORM set_config(
            'plan_cache_mode',
            CASE WHEN backfill OR since > 0 THEN 'force_custom_plan'
                 ELSE 'force_generic_plan' END,
            true);
          RETURN NEXT;
        END
        $$
        """
    )
    # The customers a pull in ALL mode must leave out include the archived ones, read per
    # page (db.pull.HIDDEN): without this index each page scanned the tenant's customers
    # (1.6-4.5 ms a page on 5,000 customers, loaded machine). Partial: only archived
    # customers are in it, so other customer writes do not touch it.
    op.create_index(
        "ix_customers_org_archived",
        "customers",
        ["org_id"],
        postgresql_where=sa.text("archived"),
    )
    role = context.config.attributes.get("app_role", "fieldsync_app")
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f'GRANT EXECUTE ON FUNCTION {SIGNATURE} TO "{role}"')


def downgrade() -> None:
    """Drop them."""
    op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
    op.drop_index("ix_customers_org_archived", table_name="customers")
