"""Canonical JSON text of any value, however deep, without recursion.

A push receipt keeps a digest of each change's payload so a replay can be told from a
reused ``clientMutationId`` (``db/push.py``). orjson writes the payload fast but refuses
nesting past 255 levels and integers past 64 bits; the standard library's encoder takes
both but recurses, so a custom field value nested a thousand deep (JSON parsers accept
1,024) made it raise ``RecursionError``. The change itself is refused by the shape check
(``sync/validation.py``), but its receipt still needs a digest a replay reproduces.
"""

from __future__ import annotations

import json


class _Text(str):
    """Punctuation already written out (a ``str`` subclass so leaves are never taken for
    it: a leaf string is a plain ``str``)."""

    __slots__ = ()


_OPEN_OBJECT, _CLOSE_OBJECT = _Text("{"), _Text("}")
_OPEN_ARRAY, _CLOSE_ARRAY = _Text("["), _Text("]")


def _key(key: object) -> str:
    # As json.dumps writes a key: strings as they are, numbers, booleans and null as JSON.
    return key if isinstance(key, str) else json.dumps(key)


def canonical_json(value: object) -> str:
    """``json.dumps(value, sort_keys=True, default=str)``, the same text, at any depth.

    Containers are opened and closed from an explicit stack; each leaf (and each key) is
    written by ``json.dumps`` itself, so escaping, numbers and the ``default=str``
    fallback are the standard library's.
    """
    out: list[str] = []
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if type(item) is _Text:
            out.append(item)
        elif isinstance(item, dict):
            if not item:
                out.append("{}")
                continue
            parts: list[object] = [_OPEN_OBJECT]
            for i, (key, inner) in enumerate(sorted(item.items())):
                parts.append(_Text((", " if i else "") + json.dumps(_key(key)) + ": "))
                parts.append(inner)
            parts.append(_CLOSE_OBJECT)
            stack.extend(reversed(parts))
        elif isinstance(item, list | tuple):
            if not item:
                out.append("[]")
                continue
            parts = [_OPEN_ARRAY]
            for i, inner in enumerate(item):
                if i:
                    parts.append(_Text(", "))
                parts.append(inner)
            parts.append(_CLOSE_ARRAY)
            stack.extend(reversed(parts))
        else:
            out.append(json.dumps(item, default=str))
    return "".join(out)
