"""Structured logging (structlog) with a request id on every line."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str = "info", *, json: bool = True) -> None:
    """JSON lines (or readable console lines) with timestamp, level and context vars."""
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
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
    # unexpected ones are logged by schema/build.py's should_mask (request id, operation).
    logging.getLogger("strawberry.execution").addFilter(lambda _record: False)
