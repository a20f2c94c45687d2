"""Field dots: per field of a synced record, the dot (replica, counter) of its last write.

With the record's version vector this tells which fields changed since any version a
client saw: exactly those whose dot that version does not cover. The server therefore
needs no history to tell a true conflict (both sides wrote the same field) from a
concurrent edit of different fields, which merges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Dot = tuple[str, int]
FieldDots = dict[str, Dot]


def changed_fields(
    old: Mapping[str, object], new: Mapping[str, object], fields: Iterable[str]
) -> list[str]:
    """The fields, in ``fields`` order, whose value in ``new`` differs from ``old``.

    A field missing from ``new`` is unchanged (patches carry only what was edited); a field
    present in ``new`` but missing from ``old`` is changed.
    """
    changed: list[str] = []
    seen: set[str] = set()
    for name in fields:
        if name in seen or name not in new:
            continue
        seen.add(name)
        if name not in old or old[name] != new[name]:
            changed.append(name)
    return changed


def stamp(dots: Mapping[str, Dot], fields: Iterable[str], dot: Dot) -> FieldDots:
    """A copy of ``dots`` with every field in ``fields`` last written by ``dot``."""
    stamped = dict(dots)
    for name in fields:
        stamped[name] = dot
    return stamped


def changed_since(dots: Mapping[str, Dot], base: Mapping[str, int]) -> set[str]:
    """The fields the server changed since ``base``: those whose dot ``base`` does not cover."""
    # covers() inlined: a push asks this of every record a change meets moved on.
    return {name for name, (replica, counter) in dots.items() if base.get(replica, 0) < counter}


def dots_to_json(dots: Mapping[str, Dot]) -> dict[str, list[object]]:
    """The JSON form ``{field: [replica, counter]}``."""
    return {name: [replica, counter] for name, (replica, counter) in dots.items()}


def dots_from_json(obj: object) -> FieldDots:
    """Field dots from their JSON form ``{field: [replica, counter]}``.

    Raises ValueError when ``obj`` is not that shape: a stored column that does not parse
    is corrupt, and guessing would silently lose or invent conflicts.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"field dots must be a JSON object, got {type(obj).__name__}")
    dots: FieldDots = {}
    for name, pair in obj.items():
        # The stored form as orjson decodes it (exact types), accepted at once: a push
        # decodes the dots of every record it touches. Anything else gets the checks below.
        if type(pair) is list and len(pair) == 2 and type(name) is str and name:
            replica, counter = pair
            if type(replica) is str and replica and type(counter) is int and counter >= 1:
                dots[name] = (replica, counter)
                continue
        if not isinstance(name, str) or not name:
            raise ValueError(f"field dot keys must be non-empty strings, got {name!r}")
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ValueError(f"dot of field {name!r} must be [replica, counter], got {pair!r}")
        replica, counter = pair
        if not isinstance(replica, str) or not replica:
            raise ValueError(f"dot of field {name!r} has an invalid replica id {replica!r}")
        # bool is an int subclass, but `true` is not a counter; counters start at 1.
        if isinstance(counter, bool) or not isinstance(counter, int) or counter < 1:
            raise ValueError(f"dot of field {name!r} has an invalid counter {counter!r}")
        dots[name] = (replica, counter)
    return dots
