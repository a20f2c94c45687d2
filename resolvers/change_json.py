"""The ``Change`` type as an encoder spec: pull pages and live batches encoded in one pass.

A device's document selects the same fields on every change of a page or a live batch, so
the selection is compiled once (``resolvers.encoded``) and every change is encoded by a
generated function; graphql-core never completes them field by field. The expressions
below are the conversions ``resolvers.sync.change_from`` applies for the typed path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

from graphql import FieldNode, FragmentDefinitionNode, GraphQLResolveInfo, GraphQLSchema
from strawberry.types.nodes import SelectedField, Selection, convert_selections

from db.entities import EntityType
from db.pull import PulledChange
from resolvers import encoded
from resolvers.encoded import Shape

CHANGE = encoded.ObjectSpec(
    name="Change",
    fields={
        "entity": "NAMES[v.entity]",
        "id": "str(v.record_id)",
        "customerId": "str(v.customer_id)",
        "op": "'DELETE' if v.deleted else 'UPSERT'",
        "version": "v.version",
        "data": "None if v.deleted else v.data",
    },
    names={"NAMES": {entity: entity.name for entity in EntityType}},
)


def change_shape(selections: Iterable[Selection]) -> Shape | None:
    """The shape of a selection set on ``Change``; None if it can't be reduced to one."""
    return encoded.shape_of(CHANGE, selections)


def nested_change_shape(fields: Iterable[Selection], parent: str, field: str) -> Shape | None:
    """The one shape selected on ``field`` (a ``[Change]``) of type ``parent``."""
    return encoded.nested_shape(CHANGE, fields, parent, field)


def encode_changes(shape: Shape, changes: Sequence[PulledChange]) -> bytes:
    """``changes`` as a JSON array of objects in ``shape``."""
    return encoded.encode(CHANGE, shape, changes)


class UnsupportedSelectionError(ValueError):
    """A selection on ``Change`` that only ordinary execution can serve."""


@dataclass(frozen=True)
class ChangeSelection:
    """A compiled selection on ``Change``: its shape (the grouping key) and its encoder."""

    shape: Shape

    @property
    def key(self) -> Shape:
        """Subscribers with equal keys receive byte-identical encodings of the same changes."""
        return self.shape

    @classmethod
    def compile(
        cls,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDefinitionNode],
        variable_values: dict[str, Any],
        field_nodes: Sequence[FieldNode],
    ) -> ChangeSelection:
        """Compile ``field_nodes`` (fields of type ``[Change]``) outside a resolver.

        For code that holds a parsed, validated document rather than a resolver's info
        (the WebSocket endpoint); strawberry's selection converter needs only these two
        attributes of an info. Raises ``UnsupportedSelectionError`` for a selection that
        does not reduce to one shape (a directive other than @skip/@include, say).
        """
        del schema  # the document is validated against it already
        info = cast(
            "GraphQLResolveInfo[Any]",
            SimpleNamespace(fragments=fragments, variable_values=variable_values),
        )
        shapes = {
            change_shape(cast("SelectedField", selected).selections)
            for selected in convert_selections(info, field_nodes)
        }
        shape = shapes.pop() if len(shapes) == 1 else None
        if shape is None:
            raise UnsupportedSelectionError("the selection on Change does not reduce to one shape")
        return cls(shape)

    def encode(self, changes: Sequence[PulledChange]) -> bytes:
        """``changes`` as the JSON array GraphQL execution would produce."""
        return encode_changes(self.shape, changes)
