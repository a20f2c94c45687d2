"""Compiled reads: a customer's detail and the customer list without the GraphQL executor.

A frontend sends the same few documents all day. For a query document whose only root
field is ``customer(id:)`` or ``customers(...)`` and whose selection reduces to one shape
(``resolvers.encoded``: aliases, fragments, ``__typename``; no directives, no custom
fields), the document is parsed and validated once, with the same rules and limits as every
other operation, and compiled: the selection becomes one SQL statement
(``db.queries.record_tree`` for the detail, ``db.queries.customer_list`` for the list: the
records, their children, the caller's user row) and one generated encoder. A request with
that document then costs a cache lookup, the arguments' coercion, three round trips and
one ``orjson.dumps``; the executor's per-request work (the extension hooks, the resolver
calls, DataLoaders and five to nine statements) was most of the time of such a read.

Anything this path does not answer exactly as the executor would (another document, a
token that does not verify, a revoked user, an id or cursor that does not decode, variables
that do not coerce, a database error) falls through to the executor with the request as it
came: the compiled path only ever answers what the ordinary one answers with data.
``tests/api/test_compiled_reads.py`` compares the two byte for byte.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
import structlog
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLField,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    VariableDefinitionNode,
    parse,
    specified_rules,
)
from graphql.execution.values import get_argument_values, get_variable_values
from starlette.types import Message, Receive, Scope, Send
from strawberry.http.parse_content_type import parse_content_type

from db.engine import Database
from db.entities import CUSTOMER
from db.queries import customer_list, record_tree
from db.queries.record_tree import Row
from resolvers import encoded, record_json
from resolvers.customers import SORTS
from resolvers.encoded import ObjectSpec, Shape
from schema.customers import CustomerFilter, CustomerOrder, OrderDirection
from schema.limits import DocumentValidator, OperationLimits, limit_rules
from schema.node import InvalidIdError, from_global_id
from schema.pagination import (
    Edge,
    InvalidCursorError,
    PageInfo,
    build_connection,
    decode_cursor,
)
from server import metrics
from server.auth import InvalidTokenError, TokenClaims, bearer_token, read_token, still_valid
from server.field_collection import collect_fields
from server.graphql_http import CONTENT_TYPES, response_media_type

log = structlog.get_logger("fieldsync.compiled_reads")
# Keys a GraphQL-over-HTTP JSON body may carry; anything else goes to the executor.
BODY_KEYS = frozenset({"query", "variables", "operationName", "extensions"})
# Frontend documents are a few hundred characters; the cache keeps at most 256 texts.
MAX_DOCUMENT_CHARS = 20_000


@dataclass(frozen=True)
class Detail:
    """``customer(id:)``: the record's tree and the caller in one statement."""

    level: record_tree.Level

    async def value(
        self, db: Database, claims: TokenClaims, arguments: dict[str, Any], max_page_size: int
    ) -> Answer:
        """The root field's value (None for a null customer), or FALLBACK."""
        try:
            record_id = from_global_id(arguments["id"], "Customer")[1]
        except InvalidIdError:
            return FALLBACK
        async with db.engine.connect() as conn, record_tree.scoped(conn, claims.org_id) as driver:
            result = await record_tree.read(
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
        if result.user["role"] == "PORTAL" and record_id != result.user["customer_id"]:
            return None  # a portal user reads only their own customer
        return result.record


@dataclass(frozen=True)
class CountedConnection:
    """A page of customers as the connection spec reads it."""

    edges: list[Edge[Row]]
    page_info: PageInfo
    total: int | None


@dataclass(frozen=True)
class CustomerList:
    """``customers(first, after, filter, orderBy)``: the page with its customers' trees,
    the total if selected, and the caller, in one statement."""

    level: record_tree.Level
    count: bool

    async def value(
        self, db: Database, claims: TokenClaims, arguments: dict[str, Any], max_page_size: int
    ) -> Answer:
        """The connection's value, or FALLBACK."""
        request = _list_request(arguments)
        if request is None or not request.usable() or not 1 <= request.first <= max_page_size:
            return FALLBACK  # the executor's BAD_USER_INPUT (or its NUL-byte rule)
        form = customer_list.form_of(
            request, _with_column(self.level, request.sort.value), count=self.count
        )
        async with (
            db.engine.connect() as conn,
            record_tree.scoped(conn, claims.org_id, plan_each=True) as driver,
        ):
            result = await customer_list.read(
                driver, request, form, org_id=claims.org_id, user_id=claims.user_id
            )
        if not still_valid(result.user, claims):
            return FALLBACK
        sort = request.sort.value
        rows = result.page.rows
        connection = build_connection(
            rows,
            [(row[sort], row["id"]) for row in rows],
            has_next=result.page.has_next,
            has_previous=request.after is not None,
            counter=_no_counter,
        )
        return CountedConnection(connection.edges, connection.page_info, result.total)


Root = Detail | CustomerList
# A root field's value, or FALLBACK: let the executor answer the request.
FALLBACK = object()
Answer = Any


@dataclass(frozen=True)
class CompiledRead:
    """One compiled document: what to coerce, what to read and how to encode it."""

    operation_label: str
    variable_definitions: tuple[VariableDefinitionNode, ...]
    field: GraphQLField
    node: FieldNode
    response_key: str
    root: Root
    build: Callable[[Any], dict[str, Any]]


class CompiledReads:
    """Compiled documents by text (LRU; documents that don't compile are remembered too)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        limits: OperationLimits,
        *,
        max_page_size: int,
        maxsize: int = 256,
    ) -> None:
        self.schema = schema
        self.max_tokens = limits.max_tokens
        self.rules = [*specified_rules, *limit_rules(limits)]
        self.validator = DocumentValidator(limits, maxsize=maxsize)
        self.max_page_size = max_page_size
        self.maxsize = maxsize
        self._cache: OrderedDict[tuple[str, str | None], CompiledRead | None] = OrderedDict()

    def lookup(self, query: str, operation_name: str | None) -> CompiledRead | None:
        """The compiled document, or None when this path does not answer it."""
        if len(query) > MAX_DOCUMENT_CHARS:
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

    def compile(self, query: str, operation_name: str | None) -> CompiledRead | None:
        """Parse, validate (every rule and limit the executor applies) and compile."""
        try:
            document = parse(query, max_tokens=self.max_tokens)
        except GraphQLError:
            return None
        if self.validator.validate(self.schema, document, self.rules):
            return None
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if operation_name is not None:
            operations = [o for o in operations if o.name and o.name.value == operation_name]
        elif len(operations) != 1:
            return None
        if len(operations) != 1 or operations[0].operation is not OperationType.QUERY:
            return None
        operation = operations[0]
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        # @skip/@include would make the selection depend on the variables.
        if encoded.has_directives(operation, fragments, set()):
            return None
        query_type = self.schema.query_type
        assert query_type is not None
        fields = collect_fields(self.schema, fragments, {}, query_type, [operation.selection_set])
        if len(fields) != 1:
            return None
        [(response_key, nodes)] = fields.items()
        name = nodes[0].name.value
        if name not in ROOT_FIELDS or any(node.arguments != nodes[0].arguments for node in nodes):
            return None
        spec = ROOT_FIELDS[name]
        shape = encoded.compile_shape(spec, fragments, {}, nodes)
        if shape is None:
            return None
        root = _root(name, shape)
        if root is None:
            return None
        return CompiledRead(
            # Labelled like the executor's requests: by the root field that runs.
            operation_label=metrics.root_field_label([name]),
            variable_definitions=tuple(operation.variable_definitions or ()),
            field=query_type.fields[name],
            node=nodes[0],
            response_key=response_key,
            root=root,
            build=encoded.builder(spec, shape),
        )

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
        compiled, payload = answer
        media_type = response_media_type(accept.decode("latin-1") if accept else None)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(payload)).encode()),
                    (b"content-type", CONTENT_TYPES[media_type].encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        metrics.REQUESTS.labels(compiled.operation_label, "query").inc()
        metrics.REQUEST_SECONDS.labels(compiled.operation_label).observe(
            time.perf_counter() - started
        )
        metrics.COMPILED_READS.inc()
        return None

    async def _answer(
        self, body: bytes, authorization: bytes | None, db: Database, secret: str
    ) -> tuple[CompiledRead, bytes] | None:
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
        coerced = get_variable_values(self.schema, compiled.variable_definitions, variables or {})
        if isinstance(coerced, list):
            return None
        try:
            arguments = get_argument_values(compiled.field, compiled.node, coerced)
            value = await compiled.root.value(db, claims, arguments, self.max_page_size)
            if value is FALLBACK:
                return None
            built = None if value is None else compiled.build(value)
            return compiled, orjson.dumps({"data": {compiled.response_key: built}})
        except Exception as exc:  # noqa: BLE001 - the executor reports it as it always does
            log.info("compiled read fell back to the executor", error=repr(exc))
            return None


ROOT_FIELDS: dict[str, ObjectSpec] = {
    "customer": record_json.CUSTOMER,
    "customers": record_json.CUSTOMER_CONNECTION,
}


def _root(name: str, shape: Shape) -> Root | None:
    """What answers root field ``name`` selected as ``shape``; None if nothing can."""
    if name == "customer":
        level = record_json.tree_level(record_json.CUSTOMER, shape)
        return None if level is None else Detail(level)
    node_shapes = {
        node_shape
        for _, field, edge_shape in shape
        if field == "edges" and edge_shape is not None
        for _, edge_field, node_shape in edge_shape
        if edge_field == "node" and node_shape is not None
    }
    if len(node_shapes) > 1:
        return None
    node_shape = node_shapes.pop() if node_shapes else ()
    level = record_json.tree_level(record_json.CUSTOMER, node_shape)
    if level is None:
        return None
    return CustomerList(level, count=any(field == "totalCount" for _, field, _ in shape))


@cache
def _with_column(level: record_tree.Level, column: str) -> record_tree.Level:
    """``level`` also reading ``column`` (a list's sort column, for the cursors)."""
    return record_tree.Level(tuple(sorted({*level.columns, column})), level.children)


def _list_request(arguments: dict[str, Any]) -> customer_list.ListRequest | None:
    """The list request of ``customers``' coerced arguments; None for a bad cursor."""
    after = arguments.get("after")
    try:
        cursor = decode_cursor(after) if after else None
    except InvalidCursorError:
        return None
    # The input types' own defaults, as the resolver gets them.
    flt = CustomerFilter(**arguments["filter"]) if arguments.get("filter") else CustomerFilter()
    order = CustomerOrder(**arguments["orderBy"]) if arguments.get("orderBy") else CustomerOrder()
    return customer_list.ListRequest(
        first=arguments["first"],
        after=cursor,
        descending=order.direction is OrderDirection.DESC,
        sort=SORTS[order.field],
        archived=flt.archived,
        email=flt.email,
        search=flt.search,
    )


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
