"""The committed schema.graphql is the SDL the code builds."""

from __future__ import annotations

from pathlib import Path

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLUnionType,
    parse,
    validate,
)

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

    def test_every_argument_input_field_and_enum_value_is_documented(self):
        """Every argument (of Query, Mutation, Subscription and object and interface fields),
        every input field and every enum value says what it means: GraphiQL and the
        generated TypeScript types show these descriptions to frontend developers."""
        schema = build_schema()._schema
        missing = []
        for name, gql_type in schema.type_map.items():
            if name.startswith("__"):
                continue
            if isinstance(gql_type, GraphQLObjectType | GraphQLInterfaceType):
                for field_name, field in gql_type.fields.items():
                    missing += [
                        f"{name}.{field_name}({arg_name})"
                        for arg_name, arg in field.args.items()
                        if not (arg.description or "").strip()
                    ]
            elif isinstance(gql_type, GraphQLInputObjectType):
                missing += [
                    f"{name}.{field_name}"
                    for field_name, field in gql_type.fields.items()
                    if not (field.description or "").strip()
                ]
            elif isinstance(gql_type, GraphQLEnumType):
                missing += [
                    f"{name}.{value_name}"
                    for value_name, value in gql_type.values.items()
                    if not (value.description or "").strip()
                ]
        assert missing == []

    def test_same_named_fields_agree_across_union_and_interface_members(self):
        """A client selects a field of every member in one go (`... on User { email }
        ... on Customer { email }`); graphql-js, codegen and Relay refuse that document
        when the members' fields of one name differ in type or nullability."""
        schema = build_schema()._schema
        conflicts = []
        for name, gql_type in schema.type_map.items():
            if isinstance(gql_type, GraphQLUnionType):
                members = list(gql_type.types)
            elif isinstance(gql_type, GraphQLInterfaceType):
                members = list(schema.get_implementations(gql_type).objects)
            else:
                continue
            by_field: dict[str, set[str]] = {}
            for member in members:
                for field_name, field in member.fields.items():
                    by_field.setdefault(field_name, set()).add(str(field.type))
            conflicts += [
                f"{name}.{field}: {sorted(types)}"
                for field, types in by_field.items()
                if len(types) > 1
            ]
        assert conflicts == []

    def test_a_selection_across_node_members_validates(self):
        """The document the frontend report failed on is valid now."""
        schema = build_schema()._schema
        document = parse(
            "query Node($id: ID!) { node(id: $id) { id ... on User { email } ... on Customer { email }"
            " ... on Contact { email } } }"
            " mutation Create($i: CreateCustomerInput!) { createCustomer(input: $i) {"
            " ... on Customer { email } ... on EmailTaken { email } } }"
        )
        assert validate(schema, document) == []
