"""Portal users lose access with their customer.

A portal user reads one customer (``users.customer_id``). Deleting that customer, or
archiving it, left the user active: they could still sign in and their tokens still
worked. Now the moment a customer becomes deleted or archived, in the same transaction,
its portal users are deactivated and their tokens revoked (the token epoch is bumped), as
``setUserActive(false)`` does. A trigger, because customers are tombstoned or archived by
several writers (mutations, pushes from phones, the external sync window), all through the
write path's set-based statements. It runs as the invoking role under row-level security:
it only touches the customer's own tenant. Re-enabling the customer does not reactivate
anyone: an admin does that deliberately (docs/security.md).

Portal users whose customer is already deleted or archived (or gone) are deactivated here.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 05:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """The trigger function, the trigger, and the existing portal users of dead customers."""
    op.execute(
        """
        CREATE FUNCTION fieldsync_portal_users_follow_customer() RETURNS trigger
        LANGUAGE plpgsql SET search_path = public AS $$
        BEGIN
          UPDATE users
             SET active = false, token_epoch = token_epoch + 1, updated_at = now()
           WHERE org_id = NEW.org_id AND customer_id = NEW.id AND role = 'PORTAL' AND active;
          RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER portal_users_follow_customer
        AFTER UPDATE ON customers
        FOR EACH ROW
        WHEN ((NEW.deleted OR NEW.archived) AND NOT (OLD.deleted OR OLD.archived))
        EXECUTE FUNCTION fieldsync_portal_users_follow_customer()
        """
    )
    # Across tenants: the owner is exempt from row-level security only while it is not
    # forced (a superuser always is); the migration's transaction makes this atomic.
    op.execute("ALTER TABLE users NO FORCE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE customers NO FORCE ROW LEVEL SECURITY")
    op.execute(
        """
        UPDATE users u
           SET active = false, token_epoch = token_epoch + 1, updated_at = now()
         WHERE u.role = 'PORTAL' AND u.active AND NOT EXISTS (
               SELECT 1 FROM customers c
                WHERE c.org_id = u.org_id AND c.id = u.customer_id
                  AND NOT c.deleted AND NOT c.archived)
        """
    )
    op.execute("ALTER TABLE customers FORCE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE users FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    """Drop the trigger and its function (deactivated users stay deactivated)."""
    op.execute("DROP TRIGGER IF EXISTS portal_users_follow_customer ON customers")
    op.execute("DROP FUNCTION IF EXISTS fieldsync_portal_users_follow_customer()")
