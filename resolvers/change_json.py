"""The ``Change`` type as an encoder spec: pull pages and live batches encoded in one pass.

A device's document selects the same fields on every change of a page or a live batch, so
the selection is compiled once (``resolvers.encoded``) and every change is encoded by a
generated function; graphql-core never completes them field by field. The expressions
below are the conversions ``resolvers.sync.change_from`` applies for the typed path;
``CHANGE_BATCH`` is the payload of the ``changes`` subscription around them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from strawberry.types.nodes import Selection

from db.entities import EntityType
from db.pull import PulledChange
from resolvers import encoded
from resolvers.encoded import Shape

CHANGE = encoded.ObjectSpec(
    name="Change",
    fields={
        "entity": "NAMES[v.entity]",
        "recordId": "str(v.record_id)",
        "customerId": "str(v.customer_id)",
        "op": "'EVICT' if v.evict else 'DELETE' if v.deleted else 'UPSERT'",
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


# A live batch of the `changes` subscription (``sync.hub.Batch``): encoded once per group of
# subscribers with the same selection and rows.
CHANGE_BATCH = encoded.ObjectSpec(
    name="ChangeBatch",
    fields={
        "changes": encoded.Nested("v.changes", CHANGE),
        "checkpoint": "v.checkpoint",
        "reset": "v.reset",
    },
)
