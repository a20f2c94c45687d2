"""Compiled reads: `customer`, `customers` and `node` answered without the GraphQL executor.

A frontend sends the same few documents all day. For a query document whose only root
field is ``customer(id:)``, ``customers(...)`` or ``node(id:)`` and whose selection below
it reduces to shapes (``resolvers.selection_json``: aliases, fragments, ``__typename``,
@skip/@include, custom fields and badges), the document is parsed and validated once, with
the same rules and limits as every other operation, and compiled: per set of values of the
variables its directives read, the selection becomes one SQL statement
(``db.queries.record_rows``: the records, every level of children the selection reaches,
the custom field definitions it needs, the caller's user row; the customer list's page,
filter, keyset and portal rule from ``db.queries.customers``) and one generated encoder.
A request with that document then costs a cache lookup, the arguments' coercion, three
round trips and one ``orjson.dumps``.

A selection of a field that is not in the encoder specs (``resolvers.selection_json.records``)
is not compiled: the connection fields of records (``Customer.contactsConnection``,
``Facility.assetsConnection``, ...) page with DataLoaders on the typed path only, so a
document that selects one is the executor's, as a field with arguments is.

Anything this path does not answer exactly as the executor would (another document, a
token that does not verify, a revoked user, an id or cursor that does not decode, a bare
uuid given to `node`, variables that do not coerce, a database error) falls through to the
executor with the request as it came: the compiled path only ever answers what the typed
one answers with data. ``tests/api/test_compiled_reads.py`` compares the two byte for byte.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any
from uuid import UUID

import orjson
import structlog
from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLField,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
)
from graphql.execution.values import get_argument_values, get_variable_values
from starlette.types import Message, Receive, Scope, Send
from strawberry.http.parse_content_type import parse_content_type

from db.auth import InvalidTokenError, TokenClaims, read_token, still_valid
from db.engine import Database
from db.entities import CUSTOMER
from db.queries import customers as customer_queries
from db.queries import record_rows
from db.queries.record_rows import Level
from db.queries.records import sees_customer
from resolvers.customers import list_request
from resolvers.selection_json.collect import Fragments, collect_fields, directive_variables
from resolvers.selection_json.documents import (
    MAX_CACHED_CHARS,
    DocumentError,
    Documents,
    fragments_of,
    operation,
)
from resolvers.selection_json.records import (
    CUSTOMER_CONNECTION,
    RECORDS,
    tree_level,
)
from resolvers.selection_json.shapes import Shape, builder, shape_of
from schema.customers import CustomerFilter, CustomerOrder
from schema.limits import OperationLimits
from schema.node import InvalidIdError, from_global_id
from schema.pagination import Edge, InvalidCursorError, PageInfo, build_connection, decode_cursor
from server import metrics
from server.auth import bearer_token
from server.graphql_http import CONTENT_TYPES, response_media_type

log = structlog.get_logger("fieldsync.compiled_reads")
# Keys a GraphQL-over-HTTP JSON body may carry; anything else goes to the executor.
BODY_KEYS = frozenset({"query", "variables", "operationName", "extensions"})
# Which path answered a request: the structlog field bound for the request's log lines,
# and (in debug mode) the response header.
READ_PATH = "read_path"
READ_PATH_HEADER = b"x-fieldsync-read-path"
# Directive variants remembered per document (each a distinct set of @skip/@include values).
MAX_VARIANTS = 16
# A root field's value, or FALLBACK: let the executor answer the request.
FALLBACK = object()


@dataclass(frozen=True)
class Detail:
    """``customer(id:)``: the record's tree and the caller in one statement."""

    level: Level
    build: Callable[[Any], dict[str, Any]]

    async def value(
        self, db: Database, claims: TokenClaims, arguments: dict[str, Any], max_page_size: int
    ) -> Any:
        """The root field's JSON value (None for a null customer), or FALLBACK."""
        try:
            record_id = from_global_id(arguments["id"], "Customer")[1]
        except InvalidIdError:
            return FALLBACK
        async with db.engine.connect() as conn, record_rows.scoped(conn, claims.org_id) as driver:
            result = await record_rows.read_record(
                driver,
                CUSTOMER.table,
                self.level,
                org_id=claims.org_id,
                user_id=claims.user_id,
                record_id=record_id,
            )
        if not still_valid(result.user, claims):
            return FALLBACK  # the executor's UNAUTHENTICATED error
        assert result.user is not None
        if not result.rows or not sees_customer(
            result.user["role"], result.user["customer_id"], record_id
        ):
            return None
        return self.build(result.rows[0])


@dataclass(frozen=True)
class NodeRead:
    """``node(id:)`` of a customer, contact, facility or asset by global id: per type, what
    the selection reads and its encoder."""

    by_type: Mapping[str, tuple[Level, Callable[[Any], dict[str, Any]]]]

    async def value(
        self, db: Database, claims: TokenClaims, arguments: dict[str, Any], max_page_size: int
    ) -> Any:
        """The record's JSON value (None when unknown or not visible), or FALLBACK."""
        try:
            type_name, record_id = from_global_id(arguments["id"])
        except InvalidIdError:
            return FALLBACK  # a bare uuid: the executor looks its type up
        if type_name not in self.by_type:
            return FALLBACK
        level, build = self.by_type[type_name]
        async with db.engine.connect() as conn, record_rows.scoped(conn, claims.org_id) as driver:
            result = await record_rows.read_record(
                driver,
                RECORDS[type_name].entity.table,
                level,
                org_id=claims.org_id,
                user_id=claims.user_id,
                record_id=record_id,
            )
        if not still_valid(result.user, claims):
            return FALLBACK
        assert result.user is not None
        if not result.rows:
            return None
        row = result.rows[0]
        # Ids read from the statement's JSON are text.
        customer_id = UUID(row["customer_id"])
        if not sees_customer(result.user["role"], result.user["customer_id"], customer_id):
            return None
        return build(row)


@dataclass(frozen=True)
class CountedConnection:
    """A page of customers as the connection spec reads it."""

    edges: list[Edge[dict[str, Any]]]
    page_info: PageInfo
    total: int | None


@dataclass(frozen=True)
class CustomerList:
    """``customers(first, after, filter, orderBy)``: the page with its customers' trees,
    the total if selected, and the caller, in one statement."""

    level: Level
    count: bool
    build: Callable[[Any], dict[str, Any]]

    async def value(
        self, db: Database, claims: TokenClaims, arguments: dict[str, Any], max_page_size: int
    ) -> Any:
        """The connection's JSON value, or FALLBACK."""
        try:
            after = decode_cursor(arguments["after"]) if arguments.get("after") else None
        except InvalidCursorError:
            return FALLBACK  # the executor's BAD_USER_INPUT
        filter_ = arguments.get("filter")
        order = arguments.get("orderBy")
        request = list_request(
            arguments["first"],
            after,
            CustomerFilter(**filter_) if filter_ else None,
            CustomerOrder(**order) if order else None,
        )
        if (
            not 1 <= request.first <= max_page_size
            or request.matches_nothing()
            or not request.cursor_fits()
        ):
            return FALLBACK  # the executor's BAD_USER_INPUT, or its special cases
        level = _with_column(self.level, request.sort.value)
        async with (
            db.engine.connect() as conn,
            record_rows.scoped(conn, claims.org_id, plan_each=True) as driver,
        ):
            result, page = await customer_queries.read_tree(
                driver,
                request,
                level,
                count=self.count,
                org_id=claims.org_id,
                user_id=claims.user_id,
            )
        if not still_valid(result.user, claims):
            return FALLBACK
        sort = request.sort.value
        connection = build_connection(
            page.rows,
            [(row[sort], row["id"]) for row in page.rows],
            has_next=page.has_next,
            has_previous=request.after is not None,
            counter=_no_counter,
        )
        return self.build(CountedConnection(connection.edges, connection.page_info, result.total))


Root = Detail | CustomerList | NodeRead


@dataclass(frozen=True)
class Plan:
    """One variant of a compiled document: the root field to coerce, read and encode."""

    operation_label: str
    field: GraphQLField
    node: FieldNode
    response_key: str
    root: Root


@dataclass
class CompiledDocument:
    """A valid single query document: its plans by the values of its directives' variables."""

    operation: OperationDefinitionNode
    fragments: Fragments
    directive_variables: tuple[str, ...]
    variants: dict[tuple[Any, ...], Plan | None]


class CompiledReads:
    """Compiled documents by text (LRU; documents that don't compile are remembered too)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        limits: OperationLimits,
        *,
        max_page_size: int,
        debug: bool = False,
        maxsize: int = 256,
    ) -> None:
        self.schema = schema
        self.documents = Documents(schema, limits, maxsize=maxsize)
        self.max_page_size = max_page_size
        self.debug = debug
        self.maxsize = maxsize
        self._cache: OrderedDict[tuple[str, str | None], CompiledDocument | None] = OrderedDict()

    def lookup(self, query: str, operation_name: str | None) -> CompiledDocument | None:
        """The compiled document, or None when this path does not answer it."""
        if len(query) > MAX_CACHED_CHARS:
            return None  # not worth keeping as a cache key; the executor answers it
        key = (query, operation_name)
        try:
            compiled = self._cache[key]
        except KeyError:
            compiled = self.compile(query, operation_name)
            self._cache[key] = compiled
            if len(self._cache) > self.maxsize:
                self._cache.popitem(last=False)
            return compiled
        self._cache.move_to_end(key)
        return compiled

    def compile(self, query: str, operation_name: str | None) -> CompiledDocument | None:
        """Parse and validate (every rule and limit the executor applies), pick the
        operation; the plans are made per directive variant (:meth:`plan`)."""
        try:
            document: DocumentNode = self.documents.document(query)
        except DocumentError:
            return None
        chosen = operation(document, operation_name)
        if chosen is None or chosen.operation is not OperationType.QUERY:
            return None
        fragments = fragments_of(document)
        return CompiledDocument(
            chosen, fragments, tuple(sorted(directive_variables(chosen, fragments))), {}
        )

    def plan(self, compiled: CompiledDocument, variables: Mapping[str, Any]) -> Plan | None:
        """The plan for these (coerced) variables' directive values; None if none answers."""
        key = tuple(variables.get(name) for name in compiled.directive_variables)
        try:
            return compiled.variants[key]
        except KeyError:
            pass
        found = self._plan(compiled, variables)
        if len(compiled.variants) < MAX_VARIANTS:
            compiled.variants[key] = found
        return found

    def _plan(self, compiled: CompiledDocument, variables: Mapping[str, Any]) -> Plan | None:
        query_type = self.schema.query_type
        assert query_type is not None
        selection = compiled.operation.selection_set
        fields = collect_fields(self.schema, compiled.fragments, variables, query_type, [selection])
        if len(fields) != 1:
            return None
        [(response_key, nodes)] = fields.items()
        name = nodes[0].name.value
        if any(node.arguments != nodes[0].arguments for node in nodes):
            return None
        root = self._root(name, compiled.fragments, variables, nodes)
        if root is None:
            return None
        return Plan(
            # Labelled like the executor's requests: by the root field that runs.
            operation_label=metrics.root_field_label([name]),
            field=query_type.fields[name],
            node=nodes[0],
            response_key=response_key,
            root=root,
        )

    def _root(
        self, name: str, fragments: Fragments, variables: Mapping[str, Any], nodes: list[FieldNode]
    ) -> Root | None:
        """What answers root field ``name`` selected by ``nodes``; None if nothing can."""
        schema = self.schema
        if name == "customer":
            spec = RECORDS["Customer"].spec
            shape = shape_of(schema, spec, fragments, variables, nodes)
            level = None if shape is None else tree_level(spec, shape)
            return None if level is None or shape is None else Detail(level, builder(spec, shape))
        if name == "node":
            by_type = {}
            for type_name, record in RECORDS.items():
                shape = shape_of(schema, record.spec, fragments, variables, nodes)
                level = None if shape is None else tree_level(record.spec, shape, ["customer_id"])
                if level is None or shape is None:
                    return None
                by_type[type_name] = (level, builder(record.spec, shape))
            return NodeRead(by_type)
        if name == "customers":
            shape = shape_of(schema, CUSTOMER_CONNECTION, fragments, variables, nodes)
            if shape is None:
                return None
            # Every `node` under every `edges` key must select the same: one tree serves them.
            node_shapes = {
                node_shape
                for _, field, edge_shape in shape
                if field == "edges" and edge_shape is not None
                for _, edge_field, node_shape in edge_shape
                if edge_field == "node" and node_shape is not None
            }
            if len(node_shapes) > 1:
                return None
            node_shape: Shape = node_shapes.pop() if node_shapes else ()
            level = tree_level(RECORDS["Customer"].spec, node_shape)
            if level is None:
                return None
            counted = any(field == "totalCount" for _, field, _ in shape)
            return CustomerList(level, counted, builder(CUSTOMER_CONNECTION, shape))
        return None

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, db: Database, secret: str
    ) -> Receive | None:
        """Answer the POST in ``scope`` if it is a compiled read; None once answered.

        Otherwise returns the ``receive`` to hand the executor: the body, if this read it,
        replayed.
        """
        content_type = authorization = accept = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"authorization":
                authorization = value
            elif name == b"accept":
                accept = value
        if not _is_utf8_json(content_type):
            return receive  # the executor's 415 (or its multipart handling)
        body = await _read_body(receive)
        replay = _replaying(body, receive)
        started = time.perf_counter()
        answer = await self._answer(body, authorization, db, secret)
        if answer is None:
            return replay
        plan, payload = answer
        structlog.contextvars.bind_contextvars(**{READ_PATH: "compiled"})
        log.debug("read answered", **{READ_PATH: "compiled"})
        media_type = response_media_type(accept.decode("latin-1") if accept else None)
        headers = [
            (b"content-length", str(len(payload)).encode()),
            (b"content-type", CONTENT_TYPES[media_type].encode()),
        ]
        if self.debug:
            headers.append((READ_PATH_HEADER, b"compiled"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        metrics.REQUESTS.labels(plan.operation_label, "query").inc()
        metrics.REQUEST_SECONDS.labels(plan.operation_label).observe(time.perf_counter() - started)
        metrics.COMPILED_READS.inc()
        return None

    async def _answer(
        self, body: bytes, authorization: bytes | None, db: Database, secret: str
    ) -> tuple[Plan, bytes] | None:
        """The response body for a compiled read, or None to let the executor answer."""
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(request, dict) or not BODY_KEYS.issuperset(request):
            return None
        query = request.get("query")
        variables = request.get("variables")
        operation_name = request.get("operationName")
        if (
            not isinstance(query, str)
            or not isinstance(variables, dict | None)
            or not isinstance(operation_name, str | None)
            or request.get("extensions")
        ):
            return None
        compiled = self.lookup(query, operation_name)
        if compiled is None:
            return None
        token = bearer_token(authorization.decode("latin-1") if authorization else None)
        if token is None:
            return None
        try:
            claims = read_token(secret, token)
        except InvalidTokenError:
            return None
        coerced = get_variable_values(
            self.schema, compiled.operation.variable_definitions or (), variables or {}
        )
        if isinstance(coerced, list):
            return None
        plan = self.plan(compiled, coerced.coerced)
        if plan is None:
            return None
        try:
            arguments = get_argument_values(plan.field, plan.node, coerced)
            value = await plan.root.value(db, claims, arguments, self.max_page_size)
            if value is FALLBACK:
                return None
            return plan, orjson.dumps({"data": {plan.response_key: value}})
        except Exception as exc:  # noqa: BLE001 - the executor reports it as it always does
            log.info("compiled read fell back to the executor", error=repr(exc))
            return None


@cache
def _with_column(level: Level, column: str) -> Level:
    """``level`` also reading ``column`` (a list's sort column, for the cursors)."""
    return Level(tuple(sorted({*level.columns, column})), level.children, level.definitions)


async def _no_counter() -> int:
    raise AssertionError("compiled lists count in their statement")


def _is_utf8_json(content_type: bytes | None) -> bool:
    """``application/json`` in utf-8 (the only JSON body ``parse_http_body`` accepts)."""
    if content_type is None:
        return False
    media_type, params = parse_content_type(content_type.decode("latin-1"))
    charset = params.get("charset", "utf-8").lower()
    return media_type.lower() == "application/json" and charset in ("utf-8", "utf8")


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """``receive`` that first hands out ``body`` again, whole."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
