"""Structured logging (structlog) with a request id on every line; no query-string value
and no database value (PostgreSQL's DETAIL, a quoted bad input) in any line."""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog
from structlog.typing import ExcInfo

# uvicorn logs every WebSocket handshake with its path *and query string*
# ('127.0.0.1:5000 - "WebSocket /graphql?token=..." 403'), and so does its access log for
# HTTP: a token a client put in the URL would be kept in the log. Every value of a query
# string is hidden, not only ``token``: ``GET /graphql?query=...&variables=...`` carries a
# document's values too, and a client may name its secret anything.
_QUERY_STRING = re.compile(r"\?[^\s\"'<>]*")
REDACTED = "[redacted]"
# The loggers uvicorn writes request lines to (records are filtered where they are made).
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def _redact_query(match: re.Match[str]) -> str:
    parameters = match.group(0)[1:]
    if not parameters:
        return "?"
    redacted = []
    for parameter in parameters.split("&"):
        name, equals, _value = parameter.partition("=")
        redacted.append(f"{name}={REDACTED}" if equals else REDACTED if parameter else "")
    return "?" + "&".join(redacted)


def redact_query_strings(text: str) -> str:
    """``text`` with the value of every query-string parameter replaced (names stay)."""
    return _QUERY_STRING.sub(_redact_query, text) if "?" in text else text


def _redacted(value: object) -> object:
    return redact_query_strings(value) if isinstance(value, str) else value


# A database error logged with its traceback also prints the driver's exception it wraps:
# asyncpg appends PostgreSQL's DETAIL ("Key (lower(email))=(...) already exists") and a data
# error quotes the offending value. db/raw.py builds its errors without them; errors of the
# SQLAlchemy engine still chain asyncpg's, so tracebacks are scrubbed here as well.
_DETAIL = re.compile(r"^(DETAIL: +).+$", re.MULTILINE)
_QUOTED_INPUT = re.compile(
    r"(invalid input (?:syntax for type [\w ]+|for query argument \$\d+|value for enum \w+)): .+$",
    re.MULTILINE,
)


def scrub_database_values(text: str) -> str:
    """``text`` without PostgreSQL's DETAIL lines and the values quoted by input errors."""
    return _QUOTED_INPUT.sub(r"\1: (value hidden)", _DETAIL.sub(r"\1(hidden)", text))


def format_exception(exc_info: ExcInfo) -> str:
    """A traceback as logged: scrubbed of database values."""
    return scrub_database_values("".join(traceback.format_exception(*exc_info)))


class RedactQueryStrings(logging.Filter):
    """A stdlib filter that hides query-string values in a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        if isinstance(record.msg, str):
            record.msg = redact_query_strings(record.msg)
        # Arguments one by one: uvicorn's access formatter unpacks them positionally.
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {key: _redacted(arg) for key, arg in record.args.items()}
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            # Formatters use a ready exc_text as it is (uvicorn's "Exception in ASGI
            # application" carries the traceback of whatever the app raised).
            record.exc_text = format_exception(record.exc_info).rstrip("\n")
        return True


def _redact_event(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the same redaction for our own lines (paths, URLs, reprs)."""
    for key, value in event_dict.items():
        if isinstance(value, str) and "?" in value:
            event_dict[key] = redact_query_strings(value)
    return event_dict


_FILTER = RedactQueryStrings()


def install_query_string_redaction() -> None:
    """Put the filter on uvicorn's loggers and on every handler they and the root logger
    have (a handler filter also sees records propagated from other loggers). Idempotent."""
    loggers = [logging.getLogger(name) for name in _UVICORN_LOGGERS]
    targets: list[logging.Filterer] = [*loggers, logging.getLogger()]
    for logger in [*loggers, logging.getLogger()]:
        targets.extend(logger.handlers)
    for target in targets:
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)


def configure_logging(level: str = "info", *, json: bool = True) -> None:
    """JSON lines (or readable console lines) with timestamp, level and context vars."""
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.ExceptionRenderer(format_exception),
        _redact_event,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # strawberry logs every GraphQL error with an excerpt of the document, and
    # graphql-core's messages quote the offending literals and variable values: a login
    # document's password would land in the log. Client errors go back to the client;
    # unexpected ones are logged by server/schema.py's should_mask (request id, operation).
    logging.getLogger("strawberry.execution").addFilter(lambda _record: False)
    install_query_string_redaction()
