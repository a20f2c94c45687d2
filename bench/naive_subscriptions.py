"""The baseline of the subscription benchmarks: a naive strawberry subscription.

What a straightforward strawberry implementation of ``changes(deviceId, since)`` does: the
same document and payload shape, served by strawberry's own graphql-transport-ws handler
(``strawberry.asgi.GraphQL`` with its subscription protocols) under uvicorn. One asyncpg
connection per process LISTENs on the write path's channel; every NOTIFY (its payload is
the tenant id) puts a poke on the queue of each subscriber of that tenant. The resolver is
an async generator per subscriber: it pulls with the existing pull command
(``db.commands.sync.pull``, as the ``pull`` query does, in a transaction of its own) and
yields the page, so graphql-core executes and encodes the result once per subscriber per
event (an empty page too: the subscriber learns the new checkpoint). Pokes are not folded:
each one is a pull; a pull returns everything committed so far, so a subscriber that falls
behind gets later changes early and empty pages for the pokes it still owes.

Not part of the product. Started and stopped by the benchmarks::

    DATABASE_URL=... FIELDSYNC_SECRET_KEY=... \\
        python -m bench.naive_subscriptions --port 8765 [--workers 2] [--pool-size 10]

The secret must be the fieldsync server's (its tokens are accepted); the benches read it
from that server's environment. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from uuid import UUID

import asyncpg
import orjson
import strawberry
import uvicorn
from graphql import GraphQLError
from sqlalchemy import make_url
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from strawberry.asgi import GraphQL
from strawberry.schema.config import StrawberryConfig
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from db.auth import InvalidTokenError, read_token
from db.commands import sync as commands
from db.engine import Database
from db.errors import NotFoundError, RecordValidationError
from db.pull import PullPage
from db.queries.users import get_user
from db.write_path import NOTIFY_CHANNEL
from resolvers.context import CurrentUser
from resolvers.sync import change_from
from schema.scalars import SCALAR_MAP
from schema.sync import Change
from server.auth import bearer_token
from sync import checkpoint as checkpoints

PAGE_LIMIT = 1000  # the pull query's maximum


class Broadcaster:
    """One LISTEN connection; each NOTIFY pokes every subscriber queue of its tenant."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.queues: dict[UUID, set[asyncio.Queue[None]]] = {}
        self.conn: asyncpg.Connection | None = None

    async def start(self) -> None:
        """Connect and LISTEN."""
        self.conn = await asyncpg.connect(self.dsn)
        await self.conn.add_listener(NOTIFY_CHANNEL, self._notified)

    async def stop(self) -> None:
        """Close the LISTEN connection."""
        if self.conn is not None:
            await self.conn.close()
            self.conn = None

    def _notified(self, conn: object, pid: int, channel: str, payload: str) -> None:
        with contextlib.suppress(ValueError):
            for queue in self.queues.get(UUID(payload), ()):
                queue.put_nowait(None)

    def subscribe(self, org_id: UUID) -> asyncio.Queue[None]:
        """A queue that gets a poke per committed change of the tenant."""
        queue: asyncio.Queue[None] = asyncio.Queue()
        self.queues.setdefault(org_id, set()).add(queue)
        return queue

    def unsubscribe(self, org_id: UUID, queue: asyncio.Queue[None]) -> None:
        """Stop poking ``queue``."""
        self.queues.get(org_id, set()).discard(queue)


@strawberry.type(description="A batch of changes for a subscribed device.")
class ChangeBatch:
    """Same shape as the fieldsync subscription's payload."""

    changes: list[Change]
    checkpoint: str
    reset: bool


def _batch(page: PullPage) -> ChangeBatch:
    return ChangeBatch(
        changes=[change_from(c) for c in page.changes],
        checkpoint=checkpoints.encode(page.checkpoint),
        reset=page.reset,
    )


async def _user(context: dict[str, Any]) -> CurrentUser:
    """The subscriber, from the connection_init payload's bearer token (as Context.user)."""
    params = context.get("connection_params") or {}
    token = bearer_token(params.get("authorization") if isinstance(params, dict) else None)
    if token is None:
        raise GraphQLError("Authentication required", extensions={"code": "UNAUTHENTICATED"})
    try:
        claims = read_token(context["secret"], token)
    except InvalidTokenError:
        raise GraphQLError("Invalid token", extensions={"code": "UNAUTHENTICATED"}) from None
    db: Database = context["db"]
    async with db.tenant(claims.org_id) as conn:
        row = await get_user(conn, claims.org_id, claims.user_id)
    if row is None or not row["active"] or row["token_epoch"] != claims.epoch:
        raise GraphQLError("Token revoked", extensions={"code": "UNAUTHENTICATED"})
    return CurrentUser.from_row(row)


async def _pull(db: Database, user: CurrentUser, device_id: UUID, since: str) -> PullPage:
    """One pull page, exactly as the ``pull`` query takes it (device locked, bookkeeping)."""
    async with db.tenant(user.org_id) as conn:
        return await commands.pull(
            conn,
            org_id=user.org_id,
            user_id=user.id,
            device_id=device_id,
            may_select=user.is_admin or "can_sync_by_customer" in user.capabilities,
            since=checkpoints.decode(since),
            limit=PAGE_LIMIT,
        )


@strawberry.type
class Query:
    """A schema needs a query type."""

    @strawberry.field
    def ok(self) -> bool:
        """Always true."""
        return True


@strawberry.type
class Subscription:
    """The naive subscription."""

    @strawberry.subscription
    async def changes(
        self, info: strawberry.Info, device_id: strawberry.ID, since: str | None = None
    ) -> AsyncGenerator[ChangeBatch, None]:
        """Catch up page by page, then pull (and yield) again on every poke of the tenant."""
        context: dict[str, Any] = info.context
        user = await _user(context)
        try:
            device_uuid = UUID(str(device_id))
            position = checkpoints.encode(checkpoints.decode(since))
        except (ValueError, checkpoints.InvalidCheckpointError):
            raise GraphQLError(
                "bad deviceId or since", extensions={"code": "BAD_USER_INPUT"}
            ) from None
        broadcaster: Broadcaster = context["broadcaster"]
        queue = broadcaster.subscribe(user.org_id)  # before the first pull: no poke is lost
        try:
            while True:
                while True:
                    try:
                        page = await _pull(context["db"], user, device_uuid, position)
                    except (NotFoundError, RecordValidationError) as exc:
                        raise GraphQLError(
                            str(exc), extensions={"code": "BAD_USER_INPUT"}
                        ) from None
                    position = checkpoints.encode(page.checkpoint)
                    yield _batch(page)
                    if not page.has_more:
                        break
                await queue.get()
        finally:
            broadcaster.unsubscribe(user.org_id, queue)


class NaiveGraphQL(GraphQL[dict[str, Any], None]):
    """Strawberry's ASGI view with graphql-transport-ws; orjson like the fieldsync server."""

    def __init__(self, schema: strawberry.Schema, state: dict[str, Any]) -> None:
        super().__init__(
            schema, graphql_ide=None, subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,)
        )
        self.state = state

    async def get_context(self, request: Any, response: Any) -> dict[str, Any]:
        """The pool, the broadcaster and the token secret."""
        return {"request": request, **self.state}

    def encode_json(self, data: object) -> bytes:
        """orjson, as the fieldsync server."""
        return orjson.dumps(data)

    def decode_json(self, data: str | bytes) -> object:
        """orjson."""
        return orjson.loads(data)


def create_app() -> Starlette:
    """The baseline app (uvicorn factory); reads DATABASE_URL and FIELDSYNC_SECRET_KEY."""
    url = os.environ["DATABASE_URL"]
    role = os.environ.get("FIELDSYNC_APP_ROLE", "fieldsync_app")
    pool_size = int(os.environ.get("NAIVE_POOL_SIZE", "10"))
    listen_dsn = make_url(url).set(drivername="postgresql", username=role, password=None)
    state: dict[str, Any] = {
        "secret": os.environ["FIELDSYNC_SECRET_KEY"],
        "broadcaster": Broadcaster(listen_dsn.render_as_string(False)),
    }
    schema = strawberry.Schema(
        query=Query, subscription=Subscription, config=StrawberryConfig(scalar_map=SCALAR_MAP)
    )
    graphql = NaiveGraphQL(schema, state)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["db"] = Database.connect(url, app_role=role, app_password=None, pool_size=pool_size)
        await state["broadcaster"].start()
        try:
            yield
        finally:
            await state["broadcaster"].stop()
            await state["db"].close()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    """Serve on 127.0.0.1 until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pool-size", type=int, default=10)
    args = parser.parse_args()
    os.environ["NAIVE_POOL_SIZE"] = str(args.pool_size)
    uvicorn.run(
        "bench.naive_subscriptions:create_app",
        factory=True,
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        ws_per_message_deflate=False,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
