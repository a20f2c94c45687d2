"""Sign-in, the current user, and user management (admins)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import strawberry

from db.auth import hash_password, issue_token, verify_password
from db.commands import users as commands
from db.errors import ForbiddenError
from db.queries import rate_limits
from db.queries import users as queries
from db.queries.text import holds_nul
from resolvers.context import Info, PublicError
from resolvers.writes import bad_id, decode_id, run_write
from schema.errors import (
    ErrorCode,
    InvalidCredentials,
    RateLimited,
    UserError,
    error_from,
    invalid,
)
from schema.node import InvalidIdError
from schema.users import (
    CapabilitiesInput,
    CreateUserInput,
    LoginResult,
    LoginSuccess,
    User,
    UserResult,
    capability_columns,
)

# Kinds of rate_limit_events rows counted by sign-in.
LOGIN_BY_EMAIL = "login_email"
LOGIN_BY_ADDRESS = "login_address"


class _RefusedError(Exception):
    def __init__(self, outcome: rate_limits.Refused) -> None:
        super().__init__("rate limited")
        self.outcome = outcome


ADMINS_MANAGE_USERS = "only admins may manage users"


def _is_admin(user: object) -> bool:
    return bool(getattr(user, "is_admin", False))


@strawberry.type
class UserQueries:
    """Who am I, and who else is here."""

    @strawberry.field(description="The signed-in user.")
    async def me(self, info: Info) -> User:
        """Current user."""
        return User.from_row(await info.context.user_row())

    @strawberry.field(description="Every user of the account (admins only).")
    async def users(self, info: Info) -> list[User]:
        """All users, by email; refused to non-admins like every admin-only query."""
        user = await info.context.user()
        if not user.is_admin:
            raise PublicError("Only admins may list the account's users", "FORBIDDEN")
        async with info.context.read() as conn:
            rows = await queries.list_users(conn, user.org_id)
        return [User.from_row(r) for r in rows]


@strawberry.type
class UserMutations:
    """Sign-in and user management."""

    @strawberry.mutation(description="Sign in with email and password; returns a bearer token.")
    async def login(
        self,
        info: Info,
        email: Annotated[
            str,
            strawberry.argument(
                description="The account's email address, any case; surrounding spaces are ignored."
            ),
        ],
        password: Annotated[
            str, strawberry.argument(description="The account's password, exactly as typed.")
        ],
    ) -> LoginResult:
        """Exchange credentials for a token."""
        ctx = info.context
        settings = ctx.settings
        # Every attempt is counted up front (so parallel guesses cannot overrun a window)
        # and a success is given back: the limits count failed attempts.
        limits = [(LOGIN_BY_EMAIL, email.strip().lower(), settings.login_rate_per_email)]
        if ctx.client_address is not None:
            limits.append((LOGIN_BY_ADDRESS, ctx.client_address, settings.login_rate_per_address))
        taken: list[rate_limits.Taken] = []
        try:
            async with ctx.db.unscoped() as conn:
                for kind, key, limit in limits:
                    outcome = await rate_limits.take(
                        conn,
                        kind,
                        key,
                        limit=limit,
                        window_seconds=settings.login_rate_window_seconds,
                    )
                    if isinstance(outcome, rate_limits.Refused):
                        # Raised to roll back: a refused attempt counts against nothing.
                        raise _RefusedError(outcome)
                    taken.append(outcome)
                # PostgreSQL text cannot hold NUL: such an email matches no account.
                found = (
                    None if holds_nul(email) else await queries.login_lookup(conn, email.strip())
                )
        except _RefusedError as refused:
            wait = refused.outcome.retry_after_seconds
            return RateLimited(
                code=ErrorCode.RATE_LIMITED,
                message=f"Too many failed sign-in attempts: try again in {wait} seconds",
                retry_after_seconds=wait,
            )
        ok = verify_password(found.password_hash if found else None, password)
        if found is None or not ok or not found.active:
            return InvalidCredentials(
                code=ErrorCode.INVALID_CREDENTIALS, message="Wrong email or password"
            )
        async with ctx.db.unscoped() as conn:
            for attempt in taken:
                await rate_limits.give_back(conn, attempt)
        secret = ctx.settings.secret_key
        assert secret is not None
        token, expires = issue_token(
            secret,
            org_id=found.org_id,
            user_id=found.user_id,
            epoch=found.token_epoch,
            ttl_seconds=ctx.settings.token_ttl_seconds,
        )
        async with ctx.db.tenant(found.org_id) as conn:
            row = await queries.get_user(conn, found.org_id, found.user_id)
        assert row is not None
        return LoginSuccess(token=token, expires_at=expires, user=User.from_row(row))

    @strawberry.mutation(description="Add a user (admins only).", graphql_type=UserResult)
    async def create_user(
        self,
        info: Info,
        input: Annotated[CreateUserInput, strawberry.argument(description="The new user.")],
    ) -> User | UserError:
        """New user."""
        if not (await info.context.user()).is_admin:
            # Before validation and the deliberately slow hash: a non-admin cannot make the
            # server hash passwords for nothing.
            return error_from(ForbiddenError(ADMINS_MANAGE_USERS))
        fields = {"email": input.email, "name": input.name}
        nul = {
            name: "must not contain NUL characters" for name, v in fields.items() if holds_nul(v)
        }
        if nul:
            return invalid(nul)
        customer_id = None
        if input.customer_id is not None:
            try:
                customer_id = decode_id(input.customer_id, "Customer")
            except InvalidIdError as exc:
                return bad_id(input.customer_id, exc)
        password_hash = hash_password(input.password)
        result = await run_write(
            info,
            lambda conn, user: commands.create_user(
                conn,
                org_id=user.org_id,
                email=input.email,
                name=input.name,
                password=input.password,
                password_hash=password_hash,
                role=input.role.value,
                capabilities=capability_columns(input.capabilities) if input.capabilities else None,
                customer_id=customer_id,
            ),
            allowed=_is_admin,
            refusal=ADMINS_MANAGE_USERS,
        )
        return User.from_row(result) if isinstance(result, dict) else result

    @strawberry.mutation(
        description="Grant or withdraw capabilities of a user (admins only).",
        graphql_type=UserResult,
    )
    async def set_user_permissions(
        self,
        info: Info,
        user_id: Annotated[
            strawberry.ID, strawberry.argument(description="The user's global `id`.")
        ],
        capabilities: Annotated[
            CapabilitiesInput,
            strawberry.argument(
                description="The capabilities to set; omitted ones keep their values."
            ),
        ],
    ) -> User | UserError:
        """Change capabilities; takes effect on the user's next request."""
        return await _update(info, user_id, capability_columns(capabilities))

    @strawberry.mutation(
        description="Activate or deactivate a user (admins only); deactivation revokes tokens.",
        graphql_type=UserResult,
    )
    async def set_user_active(
        self,
        info: Info,
        user_id: Annotated[
            strawberry.ID, strawberry.argument(description="The user's global `id`.")
        ],
        active: Annotated[
            bool,
            strawberry.argument(
                description="true: may sign in; false: may not, and their tokens stop working."
            ),
        ],
    ) -> User | UserError:
        """Activation."""
        return await _update(info, user_id, {"active": active})


async def _update(
    info: Info, user_id: strawberry.ID, values: Mapping[str, object]
) -> User | UserError:
    try:
        uid = decode_id(user_id, "User")
    except InvalidIdError as exc:
        return bad_id(user_id, exc)
    result = await run_write(
        info,
        lambda conn, user: commands.update_user(conn, user.org_id, uid, values),
        client_id=user_id,
        allowed=_is_admin,
        refusal=ADMINS_MANAGE_USERS,
    )
    return User.from_row(result) if isinstance(result, dict) else result
