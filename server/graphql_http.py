"""GraphQL-over-HTTP spec rules that strawberry leaves to the application.

The spec (https://graphql.github.io/graphql-over-http/draft/) defines two response media
types. ``application/json`` is the legacy one: every well-formed GraphQL response is a 200,
because intermediaries cannot tell a GraphQL error body from a server's own error page.
``application/graphql-response+json`` is only ever produced by a GraphQL server, so a
response in it carries meaningful status codes: 4xx for requests that never executed
(parse, validation, variable coercion), 200 once execution has started. These helpers
negotiate between the two and classify results; server/app.py applies them.
"""

from __future__ import annotations

from collections.abc import Mapping

from cross_web import HTTPException
from graphql import FieldNode, GraphQLError, OperationDefinitionNode, OperationType, parse
from starlette.types import Message, Receive
from strawberry.types import ExecutionResult

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"
# The spec requires utf-8; naming it keeps clients from guessing another charset.
CONTENT_TYPES = {
    GRAPHQL_RESPONSE_JSON: f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8",
    JSON: JSON,
}


class HTTPError(HTTPException):
    """An HTTP-level refusal with extra response headers (``Allow`` on a 405)."""

    def __init__(
        self, status_code: int, reason: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(status_code, reason)
        self.headers = dict(headers or {})


def response_media_type(accept: str | None) -> str:
    """The media type to answer in, from the request's ``Accept`` header.

    ``application/graphql-response+json`` when the client ranks it at least as high as
    ``application/json`` (a tie goes to the newer type, as the spec prefers it);
    ``application/json`` otherwise. That includes a missing ``Accept`` and wildcards
    (the spec says to assume ``application/json`` then), and types we cannot produce at
    all: the spec lets a server disregard ``Accept`` instead of answering 406, and older
    clients send odd headers but understand JSON.
    """
    if not accept:
        return JSON
    weights: dict[str, float] = {}
    for entry in accept.split(","):
        media, _, params = entry.partition(";")
        media = media.strip().lower()
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    weight = 0.0  # an unreadable weight: treat the entry as not acceptable
        weights[media] = max(weight, weights.get(media, 0.0))
    preferred = weights.get(GRAPHQL_RESPONSE_JSON, 0.0)
    return GRAPHQL_RESPONSE_JSON if preferred > 0 and preferred >= weights.get(JSON, 0.0) else JSON


def is_request_error(result: ExecutionResult) -> bool:
    """True when the operation never executed: parse, validation or variable errors.

    Those errors have no ``path`` and produce no data. A field error that nulls the whole
    result also leaves ``data`` None but has a path: execution ran, so it stays a 200
    ("data": null) under either media type, as the spec requires.
    """
    return (
        result.data is None
        and bool(result.errors)
        and all(error.path is None for error in result.errors or ())
    )


# --- Multipart uploads (issue #6): only the external import takes a file. ---

MULTIPART = "multipart/form-data"
# A request carrying one of these headers cannot be sent by a plain HTML form or a simple
# cross-site request: browsers preflight it, so a multipart POST with it is no CSRF.
CSRF_HEADERS = ("x-fieldsync-csrf", "apollo-require-preflight")
# Root mutation fields that accept an upload; every other multipart operation is refused.
UPLOAD_FIELDS = frozenset({"importExternalRecords"})
# The import mutation's document is a few dozen tokens; far more is not an import.
UPLOAD_DOCUMENT_MAX_TOKENS = 1000
# Room for the multipart envelope (boundaries, `operations`, `map`) around the file.
MULTIPART_OVERHEAD_BYTES = 256 * 1024


def has_csrf_header(headers: Mapping[str, str]) -> bool:
    """True when the request has a non-empty preflight-forcing header."""
    return any(headers.get(name, "").strip() for name in CSRF_HEADERS)


def upload_operation_allowed(query: object, operation_name: object) -> bool:
    """True when the operation to run is a mutation selecting only upload fields.

    Anything unparsable, ambiguous or selecting another field is refused: multipart stays
    off for every other operation.
    """
    if not isinstance(query, str) or not isinstance(operation_name, str | None):
        return False
    try:
        # Bounded like every other document (schema/limits.py): this parse runs before the
        # operation's own, on a body that may be 20 MB.
        document = parse(query, max_tokens=UPLOAD_DOCUMENT_MAX_TOKENS)
    except GraphQLError:
        return False
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    if len(operations) != 1 or operations[0].operation is not OperationType.MUTATION:
        return False
    selections = operations[0].selection_set.selections
    return (
        bool(selections)
        and all(
            isinstance(s, FieldNode)
            and (s.name.value in UPLOAD_FIELDS or s.name.value == "__typename")
            for s in selections
        )
        and any(isinstance(s, FieldNode) and s.name.value in UPLOAD_FIELDS for s in selections)
    )


def bounded_receive(receive: Receive, limit: int) -> Receive:
    """``receive`` that refuses (413) a request body longer than ``limit`` bytes, whatever
    its Content-Length says (chunked bodies have none)."""
    seen = 0

    async def bounded() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPError(413, f"Request body too large: at most {limit} bytes")
        return message

    return bounded
