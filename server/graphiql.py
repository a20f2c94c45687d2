"""TEMPORARY placeholder until the GraphiQL helper lands its module."""
from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static" / "graphiql"
def graphiql_html(*, endpoint: str, static_prefix: str) -> str:
    return "<html></html>"
