"""The committed schema.graphql is the SDL the code builds."""

from __future__ import annotations

from pathlib import Path

from server.schema import build_schema, export_sdl

SDL = Path(__file__).resolve().parents[1] / "schema.graphql"


class TestCommittedSchema:
    def test_schema_graphql_is_current(self):
        """Fails when the code's schema differs: run `fieldsync export-schema` and commit."""
        assert SDL.read_text() == export_sdl(), (
            "schema.graphql is stale: run `fieldsync export-schema`"
        )

    def test_every_type_and_field_is_documented(self):
        """Every type, input and field carries a description (they are the schema docs)."""
        schema = build_schema()._schema
        missing = []
        for name, gql_type in schema.type_map.items():
            if name.startswith("__") or name in {
                "String",
                "Int",
                "Float",
                "Boolean",
                "ID",
                "JSON",
                "Date",
                "DateTime",
            }:
                continue
            if not gql_type.description:
                missing.append(name)
            for field_name, field in (getattr(gql_type, "fields", None) or {}).items():
                if not field.description:
                    missing.append(f"{name}.{field_name}")
        assert missing == []
