"""The Starlette application: GraphQL (HTTP and WebSocket), GraphiQL, health and readiness."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
import uvicorn
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.parse_content_type import parse_content_type
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from db.engine import Database
from db.live import DatabaseSource
from db.migrate import current_revision, head_revision
from db.notify_listener import Listener, listener_dsn
from resolvers.context import Context
from resolvers.push_gc import fewer_young_collections
from server import metrics
from server.auth import bearer_token
from server.compiled_reads import READ_PATH, READ_PATH_HEADER, CompiledReads
from server.compression import CompressResponses
from server.graphiql import STATIC_DIR, graphiql_html
from server.graphql_http import (
    CONTENT_TYPES,
    CSRF_HEADERS,
    GRAPHQL_RESPONSE_JSON,
    MULTIPART,
    MULTIPART_OVERHEAD_BYTES,
    UPLOAD_FIELDS,
    HTTPError,
    bounded_receive,
    has_csrf_header,
    is_request_error,
    response_media_type,
    upload_operation_allowed,
)
from server.loop_lag import lag_watched
from server.schema import build_schema
from server.settings import Settings
from server.shutdown_watchdog import arm_shutdown_watchdog
from server.websocket import SubscriptionServer
from sync import checkpoint as checkpoints
from sync.hub import Hub

log = structlog.get_logger("fieldsync.http")
GRAPHIQL_STATIC = "/graphiql/static"


@dataclass
class AppState:
    """Resources the lifespan opens; requests read them from here."""

    db: Database | None = None
    # The graphql-transport-ws endpoint with its hub; None while the lifespan is not running.
    ws: SubscriptionServer | None = None

    @property
    def database(self) -> Database:
        """The pool; only None before startup."""
        if self.db is None:
            raise RuntimeError("the database pool is not open (lifespan not started)")
        return self.db


class FieldsyncGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI view with our context and locally served GraphiQL."""

    def __init__(self, state: AppState, settings: Settings) -> None:
        schema = build_schema(limits=settings.operation_limits())
        super().__init__(
            schema,
            graphql_ide="graphiql" if settings.graphiql else None,
            allow_queries_via_get=True,
            # WebSockets are served by server/websocket.py (shared encoding per batch).
            subscription_protocols=(),
            # Multipart (GraphQL multipart request spec) is parsed only for the upload
            # mutation, with a CSRF header and a bounded body: see ``__call__`` and
            # ``parse_http_body``.
            multipart_uploads_enabled=True,
        )
        self.state = state
        self.settings = settings
        # Debug mode: responses name the read path that answered them (READ_PATH_HEADER).
        self.debug = settings.log_level.lower() == "debug"
        self.compiled_reads = (
            CompiledReads(
                schema._schema,
                settings.operation_limits(),
                max_page_size=settings.max_page_size,
                debug=self.debug,
            )
            if settings.compiled_reads
            else None
        )

    async def get_context(self, request: Any, response: Any) -> Context:
        """A fresh typed context per request."""
        return Context(
            request=request,
            db=self.state.database,
            settings=self.settings,
            token=bearer_token(request.headers.get("authorization")),
            count_push_outcomes=metrics.count_push_outcomes,
        )

    def encode_json(self, data: object) -> bytes:
        """orjson: several times faster than the json module on large pull pages."""
        return orjson.dumps(data)

    def decode_json(self, data: str | bytes) -> object:
        """orjson for request bodies too."""
        return orjson.loads(data)

    def should_render_graphql_ide(self, request: Any) -> bool:
        """GraphiQL for browsers (even with `?query=` prefilled); JSON for API clients."""
        if request.method != "GET" or not self.settings.graphiql:
            return False
        accept = request.headers.get("accept", "")
        return "text/html" in accept or (
            request.query_params.get("query") is None and "*/*" in accept
        )

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        """GraphiQL from assets shipped in the package: no CDN."""
        return HTMLResponse(graphiql_html(endpoint=request.url.path, static_prefix=GRAPHIQL_STATIC))

    # GraphQL-over-HTTP spec compliance (server/graphql_http.py has the rules; the
    # graphql-http audit in tests/api/test_http_spec_audit.py checks them).

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Strawberry's entry, but HTTP refusals get headers and a GraphQL-shaped body.

        Strawberry turns an HTTPException into text/plain without headers; a 405 must
        carry ``Allow``, and a client that asked for JSON can read ``errors`` from it.
        """
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        multipart = _is_multipart(scope)
        limit = (
            self.settings.max_import_bytes + MULTIPART_OVERHEAD_BYTES
            if multipart
            else self.settings.max_request_bytes
        )
        receive = bounded_receive(receive, limit)
        request = Request(scope=scope, receive=receive)
        try:
            _check_declared_length(request, limit)
            if self.compiled_reads is not None and scope["method"] == "POST" and not multipart:
                assert self.settings.secret_key is not None  # create_app refuses without
                fallback = await self.compiled_reads.serve(
                    scope,
                    receive,
                    send,
                    self.state.database,
                    self.settings.secret_key,
                )
                if fallback is None:
                    structlog.contextvars.unbind_contextvars(READ_PATH)
                    return
                request = Request(scope=scope, receive=fallback)
            # Every request the compiled path does not answer is the executor's (typed).
            structlog.contextvars.bind_contextvars(**{READ_PATH: "executor"})
            if multipart:
                self._check_multipart(request)
            with _fewer_collections_if_large(request):
                response = await self.run(request)
        except HTTPException as exc:
            media_type = response_media_type(request.headers.get("accept"))
            response = Response(
                self.encode_json({"errors": [{"message": exc.reason}]}),
                status_code=exc.status_code,
                headers=exc.headers if isinstance(exc, HTTPError) else None,
                media_type=CONTENT_TYPES[media_type],
            )
        finally:
            if multipart:
                # Uploaded files are spooled to temporary files: close them now.
                await request.close()
        if self.debug:
            response.headers[READ_PATH_HEADER.decode()] = "executor"
        await response(scope, receive, send)
        log.debug("read answered", **{READ_PATH: "executor"})
        structlog.contextvars.unbind_contextvars(READ_PATH)

    def _check_multipart(self, request: Request) -> None:
        """Refuse a multipart POST before reading it without a CSRF header (a plain HTML
        form could send it cross-site)."""
        if not has_csrf_header(request.headers):
            raise HTTPError(
                400,
                "Multipart requests need a non-empty "
                + " or ".join(f"`{h}`" for h in CSRF_HEADERS)
                + " header (CSRF protection)",
            )

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        """Remember the negotiated media type for ``create_response`` (it gets no request)."""
        sub_response = await super().get_sub_response(request)
        sub_response.media_type = response_media_type(request.headers.get("accept"))
        return sub_response

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        """POST bodies must be utf-8 ``application/json``: anything else is a 415.

        Strawberry answers 400 and matches the type by substring; the spec asks for 415
        Unsupported Media Type (also for a missing Content-Type). ``operationName`` must
        be a string or null, as strawberry already requires of the other parameters.
        The one exception is ``multipart/form-data`` for the upload mutation
        (``UPLOAD_FIELDS``), with a CSRF header; any other multipart operation is a 400.
        """
        multipart = False
        if request.method == "POST":
            media_type, params = parse_content_type(request.content_type or "")
            charset = params.get("charset", "utf-8").lower()
            multipart = media_type.lower() == MULTIPART
            if multipart and not has_csrf_header(request.headers):
                # __call__ refuses these first; kept here so no other entry skips it.
                raise HTTPError(400, "Multipart requests need a CSRF header")
            if not multipart and (
                media_type.lower() != "application/json" or charset not in ("utf-8", "utf8")
            ):
                raise HTTPError(
                    415,
                    "Unsupported Media Type: send application/json (utf-8)",
                    headers={"Accept-Post": "application/json"},
                )
        data = await super().parse_http_body(request)
        if multipart and (
            isinstance(data, list) or not upload_operation_allowed(data.query, data.operation_name)
        ):
            raise HTTPError(
                400,
                "Multipart requests are accepted only for "
                + ", ".join(sorted(UPLOAD_FIELDS))
                + "; send other operations as application/json",
            )
        # Strawberry type-checks query, variables and extensions but not operationName;
        # an object or array there must be refused as a bad request (400) before any
        # schema extension sees it, not reported as a GraphQL error.
        for item in data if isinstance(data, list) else [data]:
            if not isinstance(item.operation_name, str | None):
                raise HTTPError(
                    400, "The GraphQL operation's `operationName` must be a string or null."
                )
        return data

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Queries and mutations only: a subscription over HTTP is a 400 that points to
        the WebSocket endpoint (strawberry would run its resolver as a query and fail), a
        mutation over GET a 405 with ``Allow: POST`` (the spec's MUST)."""
        allowed = OperationType.from_http(request_adapter.method) - {OperationType.SUBSCRIPTION}
        if not self.allow_queries_via_get and request_adapter.method == "GET":
            allowed -= {OperationType.QUERY}
        try:
            return await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except CannotGetOperationTypeError as exc:
            raise HTTPError(400, exc.as_http_error_reason()) from exc
        except InvalidOperationTypeError as exc:
            if exc.operation_type is OperationType.SUBSCRIPTION:
                raise HTTPError(
                    400,
                    "Subscriptions are served over WebSocket (graphql-transport-ws) at"
                    " /graphql, not over HTTP",
                ) from exc
            raise HTTPError(
                405, exc.as_http_error_reason(request_adapter.method), headers={"Allow": "POST"}
            ) from exc
        except MissingQueryError as exc:
            raise HTTPError(400, "No GraphQL query found in the request") from exc

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        """Masked errors as before; a request error has no ``data`` entry in the new type.

        ``application/json`` bodies keep ``"data": null`` for existing clients.
        """
        response_data = await super().process_result(request, result)
        if is_request_error(result) and (
            response_media_type(request.headers.get("accept")) == GRAPHQL_RESPONSE_JSON
        ):
            response_data.pop("data", None)
        return response_data

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        """The negotiated content type, and 400 for request errors in the new type.

        Under ``application/json`` every GraphQL response stays a 200 (the spec's rule
        for that type); under ``application/graphql-response+json`` a response without
        ``data`` means the operation never ran, which the spec makes a 400.
        """
        response = super().create_response(response_data, sub_response)
        if sub_response.media_type == GRAPHQL_RESPONSE_JSON:
            response.headers["content-type"] = CONTENT_TYPES[GRAPHQL_RESPONSE_JSON]
            if (
                not sub_response.status_code
                and isinstance(response_data, dict)
                and "data" not in response_data
            ):
                response.status_code = 400
        return response


def _is_multipart(scope: Scope) -> bool:
    """A POST whose Content-Type is multipart/form-data."""
    if scope.get("method") != "POST":
        return False
    for name, value in scope.get("headers") or []:
        if name == b"content-type":
            media_type, _ = parse_content_type(value.decode("latin-1"))
            return media_type.lower() == MULTIPART
    return False


class FieldsyncApp(Starlette):
    """The Starlette app, with ``/graphql`` WebSockets handed to the subscription server
    before any of Starlette's layers.

    A socket's ASGI call stays suspended for the connection's whole life, and every
    middleware and routing layer it passed through stays suspended with it: skipping the
    HTTP middleware saved about 5 KB per idle subscriber; dispatching here, ahead of
    Starlette's own call and its error middleware, saves two more frames per socket. (Logs
    of a socket carry no request id.)
    """

    def __init__(self, *, subscriptions: AppState, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.subscriptions = subscriptions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry."""
        if scope["type"] == "websocket" and scope["path"] == "/graphql":
            scope["app"] = self
            websocket = WebSocket(scope, receive=receive, send=send)
            if self.subscriptions.ws is None:
                await websocket.close(code=1011, reason="server not started")
                return
            await self.subscriptions.ws(websocket)
            return
        await super().__call__(scope, receive, send)


class RequestIdMiddleware:
    """Bind a request id (from ``X-Request-Id`` or new) to logs and echo it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode()[:64] or uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id)

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.unbind_contextvars("request_id")


def _check_declared_length(request: Request, limit: int) -> None:
    """413 before reading a body whose declared length is over ``limit`` (a body without a
    length is cut off by ``bounded_receive`` as it arrives)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, f"Request body too large: at most {limit} bytes")


# A body this large (a push of a few hundred changes) allocates tens of thousands of
# objects before any resolver runs (the decoded JSON, the coerced variables) and after
# (the encoded answer): young collections are held back for the whole request, as the
# push resolver holds them back for its own part (resolvers/push_gc.py). In-process, a
# push of 1,000 changes still set off ~50 young passes outside the resolver (12 ms).
LARGE_BODY_BYTES = 64 * 1024


def _fewer_collections_if_large(request: Request) -> AbstractContextManager[None]:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) >= LARGE_BODY_BYTES:
        return fewer_young_collections()
    return nullcontext()


def _is_uvicorn_handler(handler: object) -> bool:
    return isinstance(getattr(handler, "__self__", None), uvicorn.Server)


@asynccontextmanager
async def _watched(settings: Settings) -> AsyncIterator[None]:
    """A running worker's watchdogs: the shutdown grace and the event loop's lag."""
    arm_shutdown_watchdog(settings.shutdown_grace_seconds, is_server_handler=_is_uvicorn_handler)
    async with lag_watched():
        yield


def create_app(settings: Settings, database: Database | None = None) -> Starlette:
    """The ASGI app; opens its own pool in the lifespan unless ``database`` is given."""
    if settings.secret_key is None:
        raise RuntimeError("FIELDSYNC_SECRET_KEY is not set")
    state = AppState(db=database)

    graphql = FieldsyncGraphQL(state, settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = state.db is None
        if owned:
            if settings.database_url is None:
                raise RuntimeError("DATABASE_URL is not set")
            state.db = Database.connect(
                settings.database_url,
                app_role=settings.app_role,
                app_password=settings.app_role_password,
                pool_size=settings.pool_size,
            )
        hub = Hub(
            DatabaseSource(state.database),
            encode_checkpoint=checkpoints.encode,
            concurrent_pulls=settings.live_concurrent_pulls,
            recheck_seconds=settings.live_recheck_seconds,
            fanout_chunk=settings.live_fanout_chunk,
            catch_up_group=settings.live_catch_up_group,
        )
        listener: Listener | None = None
        try:
            if settings.database_url is not None:
                listener = Listener(
                    listener_dsn(
                        settings.database_url,
                        app_role=settings.app_role,
                        app_password=settings.app_role_password,
                    ),
                    on_notify=hub.poke,
                    on_reconnect=hub.poke_all,
                    health_seconds=settings.listener_health_seconds,
                )
                # Listening starts before any subscriber reads: no commit falls between.
                await listener.start()
            hub.start()
            app.state.hub = hub
            hub.observe_fanout = metrics.FANOUT_LAG.observe
            state.ws = SubscriptionServer(
                schema=graphql.schema, settings=settings, db=state.database, hub=hub
            )
            async with _watched(settings):
                yield
        finally:
            if state.ws is not None:
                await state.ws.drain()
                state.ws = None
            await hub.close()
            if listener is not None:
                await listener.close()
            if owned:
                await state.database.close()
                state.db = None

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        head = head_revision()
        try:
            async with state.database.unscoped() as conn:
                await conn.execute(text("SELECT 1"))
                revision = await current_revision(conn)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            log.warning("readiness check failed", error=repr(exc))
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
        if revision != head:
            return JSONResponse(
                {"status": "unavailable", "database": "ok", "migration": revision, "head": head},
                503,
            )
        return JSONResponse({"status": "ready", "database": "ok", "migration": revision})

    async def metrics_endpoint(request: Request) -> Response:
        # Per process unless PROMETHEUS_MULTIPROC_DIR is set (server/metrics.py).
        hub = getattr(request.app.state, "hub", None)
        body, content_type = metrics.metrics_response_body(
            (lambda: hub.subscriber_count) if hub is not None else None,
            state.db.engine.pool if state.db is not None else None,
        )
        return Response(body, media_type=content_type)

    async def home(request: Request) -> Response:
        # The bare address is where people land first: GraphiQL, not a bare Not Found.
        if settings.graphiql:
            return Response(status_code=307, headers={"location": "/graphql"})
        return Response("fieldsync: GraphQL at POST /graphql\n", media_type="text/plain")

    routes = [
        Route("/", home),
        Route("/metrics", metrics_endpoint),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/graphql", graphql, methods=["GET", "POST"]),
        Mount(GRAPHIQL_STATIC, StaticFiles(directory=STATIC_DIR), name="graphiql"),
    ]
    return FieldsyncApp(
        subscriptions=state,
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(CompressResponses, enabled=settings.http_compression),
        ],
    )
