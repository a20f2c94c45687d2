"""Validation of a record's values, for online edits and device pushes alike.

Pure: takes the merged values of a record (server copy plus patch) and the tenant's custom
field definitions, returns ``{field path: message}``; empty means valid. Field paths use
the API's camelCase names (``email``, ``phones[1].number``, ``customFields.color``) so a
client can point at the input that needs fixing. A field made required after an offline
edit was taken fails here, and the device gets ``VALIDATION_FAILED`` to fix and push again.

Every check starts with the *shape* of each value (:func:`shape_errors`): text where a text
column is, a list of phone objects where phones are, a map of scalars where custom fields
are, and so on for every field of every record type (:data:`FIELD_SHAPES`). Values arrive
as JSON from several doors (online inputs, pushes, a conflict's merge values, imports);
whatever one lets through, a value of the wrong shape is refused here with a field error
and never stored, so no read can later trip over it. The shape check looks only as deep as
a shape goes (at most three levels) and at no more than ``MAX_LIST_ITEMS`` items of a list,
so any input, however nested or long, is judged in linear time without recursion.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

PHONE_TYPES = frozenset({"MOBILE", "HOME", "WORK", "FAX", "OTHER"})
ADDRESS_TYPES = frozenset({"BILL_TO", "SHIP_TO", "PHYSICAL"})
FIELD_TYPES = frozenset({"TEXT", "NUMBER", "DATE", "CHECKBOX", "DROPDOWN"})
MAX_LIST_ITEMS = 50
# Keys of one custom fields map: far more than any tenant defines for a record type, few
# enough that a map of 100,000 keys is refused by its size before anything looks at them.
MAX_CUSTOM_FIELDS = 1_000
# Credentials: tighter caps than the general text limit, except notes.
CREDENTIAL_LIMITS = {"name": 2_048, "username": 2_048, "url": 2_048, "notes": 10_000}
_PHONE = re.compile(r"^[0-9+()\-. /x#*]{3,40}$")


@dataclass(frozen=True)
class FieldDefinition:
    """A custom field as validation sees it."""

    key: str
    label: str
    field_type: str
    required: bool
    options: tuple[str, ...] = ()


@lru_cache(maxsize=4096)
def camel(name: str) -> str:
    """``install_date`` -> ``installDate``: the API name of a column.

    Cached: validation names every value of a record by path, ~20 per record of a push,
    from a small set of column and JSON keys (bounded, as keys may come from clients).
    """
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class Shape(enum.Enum):
    """The kind of value a field holds as its table stores it; the value says it in words."""

    TEXT = "text or null"
    BOOL = "true or false"
    DATE = "a date as YYYY-MM-DD or null"
    INTEGER = "a whole number or null"
    BYTES = "binary data or null"
    PHONES = "a list of phones ({type, number})"
    ADDRESSES = "a list of addresses ({type, line1, line2, city, region, postalCode, country})"
    SITE_ADDRESS = "an address ({line1, line2, city, region, postalCode, country})"
    EMAILS = "a list of email addresses"
    SETTINGS = "an object of settings"
    CUSTOM_FIELDS = "an object of custom field key: value"


_T, _B = Shape.TEXT, Shape.BOOL
# Every writable field of every synced record type (db/entities.py; the column types are in
# db/tables/*.py). tests/sync/test_validation.py checks the two agree.
FIELD_SHAPES: Mapping[str, Mapping[str, Shape]] = {
    "customer": {
        "business_name": _T,
        "first_name": _T,
        "last_name": _T,
        "email": _T,
        "phones": Shape.PHONES,
        "addresses": Shape.ADDRESSES,
        "notification_emails": Shape.EMAILS,
        "invoice_cc_emails": Shape.EMAILS,
        "settings": Shape.SETTINGS,
        "custom_fields": Shape.CUSTOM_FIELDS,
        "archived": _B,
    },
    "contact": {
        "first_name": _T,
        "last_name": _T,
        "title": _T,
        "email": _T,
        "phones": Shape.PHONES,
        "notes": _T,
        "custom_fields": Shape.CUSTOM_FIELDS,
    },
    "facility": {
        "name": _T,
        "address": Shape.SITE_ADDRESS,
        "notes": _T,
        "custom_fields": Shape.CUSTOM_FIELDS,
    },
    "asset": {
        "kind": _T,
        "manufacturer": _T,
        "model": _T,
        "serial_number": _T,
        "install_date": Shape.DATE,
        "location": _T,
        "notes": _T,
        "custom_fields": Shape.CUSTOM_FIELDS,
    },
    "credential": {
        "name": _T,
        "username": _T,
        "url": _T,
        "notes": _T,
        "is_public": _B,
        "has_password": _B,
        "key_id": _T,
        "wrapped_key": Shape.BYTES,
        "key_nonce": Shape.BYTES,
        "password_nonce": Shape.BYTES,
        "password_ciphertext": Shape.BYTES,
        "alg_version": Shape.INTEGER,
    },
}

# The keys of the objects inside JSON columns (stored as the API names them), with the kind
# of each value; a required key must hold a value, the others may be absent or null.
_Key = tuple[str, bool]  # (kind: "text" | "bool" | "number", required)
_PHONE_KEYS: Mapping[str, _Key] = {"type": ("text", True), "number": ("text", True)}
_SITE_ADDRESS_KEYS: Mapping[str, _Key] = dict.fromkeys(
    ("line1", "line2", "city", "region", "postalCode", "country"), ("text", False)
)
_ADDRESS_KEYS: Mapping[str, _Key] = {"type": ("text", True), **_SITE_ADDRESS_KEYS}
_SETTING_KEYS: Mapping[str, _Key] = {
    "taxFree": ("bool", False),
    "taxRate": ("number", False),
    "smsEnabled": ("bool", False),
    "billingEmails": ("bool", False),
    "marketingEmails": ("bool", False),
    "reportEmails": ("bool", False),
    "noEmail": ("bool", False),
}
_KIND_WORDS = {"text": "text", "bool": "true or false", "number": "a number"}
# JSON numbers past 64 bits cannot be encoded again (orjson) nor read by most clients.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
# Custom field values a client sent under keys nobody defined: name a few, not thousands.
_MAX_VALUE_ERRORS = 20
CUSTOM_VALUE_SHAPE = (
    "must be a single value (text, a number, a date as YYYY-MM-DD, true/false or an option),"
    " not a list or an object"
)


def is_number(value: object) -> bool:
    """A JSON number every reader can take: finite, and a whole number within 64 bits."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return _INT_MIN <= value <= _INT_MAX
    return isinstance(value, float) and math.isfinite(value)


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | bool) or is_number(value)


def _kind_ok(kind: str, value: object) -> bool:
    if kind == "text":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    return is_number(value)


def path_segment(key: object) -> str:
    """A client's map key as a short piece of an error path that encodes as JSON."""
    text = key if isinstance(key, str) else repr(key)
    if len(text) > 64:
        text = text[:64] + "..."
    # A lone surrogate would make the whole error response unencodable.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _object(
    value: object, path: str, keys: Mapping[str, _Key], what: str, errors: dict[str, str]
) -> None:
    """A JSON object with only ``keys``, each of its kind."""
    if not isinstance(value, Mapping):
        errors.setdefault(path, f"must be {what}")
        return
    for key in value:
        if key not in keys:
            # The first unknown key is enough to fix the input; the rest would be noise.
            errors.setdefault(f"{path}.{path_segment(key)}", "is not a known key")
            break
    for key, (kind, required) in keys.items():
        inner = value.get(key)
        if inner is None:
            if required:
                errors.setdefault(f"{path}.{key}", "is required")
        elif not _kind_ok(kind, inner):
            errors.setdefault(f"{path}.{key}", f"must be {_KIND_WORDS[kind]}")


def _items(value: object, path: str, shape: Shape, errors: dict[str, str]) -> Sequence[object]:
    """The items of a list-shaped value, or none (with the error) when it is not one."""
    if not isinstance(value, list | tuple):
        errors.setdefault(path, f"must be {shape.value}")
        return ()
    if len(value) > MAX_LIST_ITEMS:
        errors.setdefault(path, f"has too many items ({len(value)}, at most {MAX_LIST_ITEMS})")
        return ()
    return value


# Shapes of one plain column value: a value that does not fit needs no closer look.
_SCALAR_SHAPES = frozenset({Shape.TEXT, Shape.BOOL, Shape.DATE, Shape.INTEGER, Shape.BYTES})


def _check_json_shape(shape: Shape, value: object, path: str, errors: dict[str, str]) -> None:
    """Where a value of a JSON column misses its shape: lists of objects, objects, maps of
    scalars."""
    if shape is Shape.PHONES:
        for i, phone in enumerate(_items(value, path, shape, errors)):
            _object(phone, f"{path}[{i}]", _PHONE_KEYS, "a phone ({type, number})", errors)
    elif shape is Shape.ADDRESSES:
        for i, address in enumerate(_items(value, path, shape, errors)):
            _object(address, f"{path}[{i}]", _ADDRESS_KEYS, "an address", errors)
    elif shape is Shape.EMAILS:
        for i, email in enumerate(_items(value, path, shape, errors)):
            if not isinstance(email, str):
                errors.setdefault(f"{path}[{i}]", "must be an email address (text)")
    elif shape is Shape.SITE_ADDRESS:
        _object(value, path, _SITE_ADDRESS_KEYS, shape.value, errors)
    elif shape is Shape.SETTINGS:
        _object(value, path, _SETTING_KEYS, shape.value, errors)
    elif not isinstance(value, Mapping):
        errors.setdefault(path, f"must be {shape.value}")
    elif len(value) > MAX_CUSTOM_FIELDS:
        errors.setdefault(path, f"has too many keys ({len(value)}, at most {MAX_CUSTOM_FIELDS})")
    else:
        found = 0
        for key, inner in value.items():
            if not isinstance(key, str) or not _is_scalar(inner):
                errors.setdefault(f"{path}.{path_segment(key)}", CUSTOM_VALUE_SHAPE)
                found += 1
                if found >= _MAX_VALUE_ERRORS:
                    break


def _object_fits(value: object, keys: Mapping[str, _Key]) -> bool:
    # _kind_ok inlined: this runs for every phone, address and settings object of a record.
    if not isinstance(value, dict) or not value.keys() <= keys.keys():
        return False
    for key, (kind, required) in keys.items():
        inner = value.get(key)
        if inner is None:
            if required:
                return False
        elif kind == "text":
            if not isinstance(inner, str):
                return False
        elif kind == "bool":
            if not isinstance(inner, bool):
                return False
        elif not is_number(inner):
            return False
    return True


def _objects_fit(value: object, keys: Mapping[str, _Key]) -> bool:
    if not isinstance(value, list) or len(value) > MAX_LIST_ITEMS:
        return False
    return all(_object_fits(item, keys) for item in value)


# Does a value fit its shape? Booleans only, no paths or messages: the common case of a
# well-shaped record costs a few microseconds, and only a misfit is looked at in detail.
_FITS: Mapping[Shape, Callable[[object], bool]] = {
    Shape.TEXT: lambda v: v is None or isinstance(v, str),
    Shape.BOOL: lambda v: isinstance(v, bool),
    Shape.DATE: lambda v: v is None or (isinstance(v, date) and not isinstance(v, datetime)),
    Shape.INTEGER: lambda v: v is None or (isinstance(v, int) and is_number(v)),
    Shape.BYTES: lambda v: v is None or isinstance(v, bytes | bytearray | memoryview),
    Shape.PHONES: lambda v: _objects_fit(v, _PHONE_KEYS),
    Shape.ADDRESSES: lambda v: _objects_fit(v, _ADDRESS_KEYS),
    Shape.EMAILS: lambda v: (
        isinstance(v, list) and len(v) <= MAX_LIST_ITEMS and all(isinstance(e, str) for e in v)
    ),
    Shape.SITE_ADDRESS: lambda v: _object_fits(v, _SITE_ADDRESS_KEYS),
    Shape.SETTINGS: lambda v: _object_fits(v, _SETTING_KEYS),
    Shape.CUSTOM_FIELDS: lambda v: (
        isinstance(v, dict)
        and len(v) <= MAX_CUSTOM_FIELDS
        and all(isinstance(k, str) and _is_scalar(x) for k, x in v.items())
    ),
}


# Per record type, each field's shape with its fit check: one lookup per value, not two.
_FIELD_FITS: Mapping[str, Mapping[str, tuple[Shape, Callable[[object], bool]]]] = {
    entity: {name: (shape, _FITS[shape]) for name, shape in shapes.items()}
    for entity, shapes in FIELD_SHAPES.items()
}


def shape_errors(entity: str, values: Mapping[str, object]) -> dict[str, str]:
    """Each value of ``values`` (column -> value) not of its field's shape, by API path.

    Pure, linear in the input and never recursive: a value is looked at only as deep as its
    shape goes. Fields not given are not checked (callers pass a whole record or a patch),
    nor are names that are not fields (a row's bookkeeping columns; the write path refuses
    a patch naming one). This is the check every write path runs first
    (:func:`validate_record` does) and the last wall before a row is stored: an empty
    result means every value can be stored and read back.
    """
    fields = _FIELD_FITS.get(entity, {})
    errors: dict[str, str] = {}
    for name, value in values.items():
        found = fields.get(name)
        if found is None:
            continue
        shape, fits = found
        if fits(value):
            continue
        if shape in _SCALAR_SHAPES:
            errors.setdefault(camel(name), f"must be {shape.value}")
        else:
            _check_json_shape(shape, value, camel(name), errors)
    return errors


def values_from_json(entity: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as decoded from JSON, with date fields made dates again.

    A stored conflict's patch and a merge's values come as JSON, where a date is a
    ``YYYY-MM-DD`` string; the tables want a date. A string that is not a date stays as
    it is, for :func:`shape_errors` to refuse.
    """
    shapes = FIELD_SHAPES.get(entity, {})
    out = dict(values)
    for name, value in values.items():
        if shapes.get(name) is Shape.DATE and isinstance(value, str) and len(value) <= 32:
            try:
                out[name] = date.fromisoformat(value)
            except ValueError:
                continue
    return out


# The common address shape, ASCII with a lower-case dotted domain, that email-validator
# always accepts once the few checks in _surely_valid_email also pass. email-validator
# takes ~35 us per address (Unicode and IDNA handling), and a push validates every email
# of each record it writes, so addresses of this shape skip it; anything else (upper case
# or Unicode domains, quoting, Punycode, odd lengths) still goes through it. The fast path
# only ever says "valid" where the library would: tests/sync/test_validation.py checks it.
_PLAIN_EMAIL = re.compile(
    r"[A-Za-z0-9_!#$%&'*+/=?^`{|}~-]+(?:\.[A-Za-z0-9_!#$%&'*+/=?^`{|}~-]+)*"
    r"@((?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z](?:[a-z0-9-]*[a-z])?)\Z"
)
# email-validator's limits (RFC 5321): whole address, local part (strict mode only, kept
# here to stay on the safe side), domain, one label.
_EMAIL_MAX, _LOCAL_MAX, _DOMAIN_MAX, _LABEL_MAX = 254, 64, 253, 63
_SPECIAL_USE_DOMAINS = frozenset(SPECIAL_USE_DOMAIN_NAMES)


def _surely_valid_email(value: str) -> bool:
    """True only for addresses email-validator accepts (False means "ask it")."""
    match = _PLAIN_EMAIL.match(value)
    if match is None or len(value) > _EMAIL_MAX:
        return False
    domain = match.group(1)
    if len(domain) > _DOMAIN_MAX or len(value) - len(domain) - 1 > _LOCAL_MAX:
        return False
    # "--" covers Punycode ("xn--") and the other reserved label forms.
    if "--" in domain:
        return False
    if any(len(label) > _LABEL_MAX for label in domain.split(".")):
        return False
    # Special-use names (and their subdomains): "test", "localhost", "onion", ... The domain
    # and each of its suffixes after a dot, without joining its labels again.
    suffix = domain
    while suffix not in _SPECIAL_USE_DOMAINS:
        dot = suffix.find(".")
        if dot < 0:
            return True
        suffix = suffix[dot + 1 :]
    return False


def is_valid_email(value: str) -> bool:
    """Syntax check only: no DNS lookups (many sites are offline)."""
    if _surely_valid_email(value):
        return True
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_problem(value: str, max_length: int | None = None) -> str | None:
    """Why PostgreSQL could not store ``value`` as text (within ``max_length``), or None."""
    if max_length is not None and len(value) > max_length:
        return f"is too long ({len(value)} characters, at most {max_length})"
    if "\x00" in value:
        # PostgreSQL text and jsonb cannot hold NUL.
        return "must not contain NUL characters"
    if not value.isascii() and not _encodable(value):
        # A lone surrogate (JSON's "\ud800") cannot be stored nor encoded in a response.
        return "must be valid Unicode text (no unpaired surrogates)"
    return None


# Exact types of values with no text in them (dates and bytes are stored values).
_PLAIN_SCALARS = frozenset({bool, int, float, date, bytes})


def _strings_fit(value: object, max_length: int) -> bool:
    """True only when :func:`_check_strings` would find nothing in ``value`` (False means
    "look closely"): the common, clean value is judged without naming a path per string.

    Only the exact types JSON decodes to are walked (a subclass, or anything else, gets the
    close look); shaped values are at most three levels deep.
    """
    if type(value) is str:
        return (
            len(value) <= max_length
            and "\x00" not in value
            and (value.isascii() or _encodable(value))
        )
    # Loops rather than all(generator): this runs for every value of every record a push
    # validates, and the generators cost a third of its time.
    if type(value) is dict:
        for inner in value.values():  # noqa: SIM110
            if not _strings_fit(inner, max_length):
                return False
        return True
    if type(value) is list:
        if len(value) > MAX_LIST_ITEMS:
            return False
        for inner in value:  # noqa: SIM110
            if not _strings_fit(inner, max_length):
                return False
        return True
    return value is None or type(value) in _PLAIN_SCALARS


def _check_strings(value: object, path: str, max_length: int, errors: dict[str, str]) -> None:
    # Recursive, but only ever given values that passed shape_errors: three levels at most.
    if isinstance(value, str):
        problem = text_problem(value, max_length)
        if problem is not None:
            errors.setdefault(path, problem)
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            _check_strings(inner, f"{path}.{camel(str(key))}", max_length, errors)
    elif isinstance(value, list | tuple):
        if len(value) > MAX_LIST_ITEMS:
            errors.setdefault(path, f"has too many items ({len(value)}, at most {MAX_LIST_ITEMS})")
        for i, inner in enumerate(value):
            _check_strings(inner, f"{path}[{i}]", max_length, errors)


def _shown(value: object) -> str:
    """A client's value quoted in a message: short, and always encodable."""
    return path_segment(repr(value))


def _check_email(value: object, path: str, errors: dict[str, str], *, item: bool = False) -> None:
    """An email address or null; blank is refused, not taken as "no email" (a blank primary
    email would be unique per tenant like any other, and "taken" for everyone else)."""
    if value is None:
        return
    if not isinstance(value, str) or not value.strip():
        errors.setdefault(
            path,
            "must not be blank: remove it from the list"
            if item
            else "must not be blank: leave it out or send null for no email",
        )
    elif not is_valid_email(value):
        errors.setdefault(path, f"is not a valid email address: {_shown(value)}")


def _check_phones(phones: object, errors: dict[str, str]) -> None:
    for i, phone in enumerate(phones if isinstance(phones, list) else []):
        if phone.get("type") not in PHONE_TYPES:
            errors.setdefault(f"phones[{i}].type", f"must be one of {sorted(PHONE_TYPES)}")
        number = phone.get("number")
        if not isinstance(number, str) or not _PHONE.match(number.strip()):
            errors.setdefault(
                f"phones[{i}].number", "must be 3-40 digits, spaces or + ( ) - . / x # *"
            )


def _check_custom_value(definition: FieldDefinition, value: object) -> str | None:
    kind = definition.field_type
    if kind == "TEXT" and not isinstance(value, str):
        return "must be text"
    if kind == "NUMBER" and (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        return "must be a number"
    if kind == "CHECKBOX" and not isinstance(value, bool):
        return "must be true or false"
    if kind == "DATE":
        try:
            date.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            return "must be a date as YYYY-MM-DD"
        if not isinstance(value, str):
            return "must be a date as YYYY-MM-DD"
    if kind == "DROPDOWN" and value not in definition.options:
        return f"must be one of {list(definition.options)}"
    return None


def validate_custom_fields(
    values: object, definitions: Sequence[FieldDefinition], errors: dict[str, str]
) -> None:
    """Check custom field values against the tenant's definitions for the entity type."""
    given: Mapping[str, Any] = values if isinstance(values, Mapping) else {}
    by_key = {d.key: d for d in definitions}
    unknown = 0
    for key, value in given.items():
        definition = by_key.get(key)
        if definition is None:
            # A few unknown keys name the mistake; hundreds would only swell the answer.
            unknown += 1
            if unknown <= _MAX_VALUE_ERRORS:
                errors.setdefault(
                    f"customFields.{path_segment(key)}", "is not a custom field of this record type"
                )
        elif not _blank(value):
            problem = _check_custom_value(definition, value)
            if problem:
                errors.setdefault(
                    f"customFields.{path_segment(key)}", f"{definition.label} {problem}"
                )
    for definition in definitions:
        if definition.required and _blank(given.get(definition.key)):
            errors.setdefault(f"customFields.{definition.key}", f"{definition.label} is required")


def _require_name(values: Mapping[str, Any], fields: Sequence[str], errors: dict[str, str]) -> None:
    if all(_blank(values.get(f)) for f in fields):
        errors.setdefault(
            camel(fields[0]), "give a " + " or ".join(f.replace("_", " ") for f in fields)
        )


def validate_record(
    entity: str,
    values: Mapping[str, Any],
    definitions: Sequence[FieldDefinition],
    *,
    max_length: int = 10_000,
    stored: Mapping[str, Any] | None = None,
    shaped: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Every problem with ``values`` of a record of type ``entity``, by field path.

    The shapes first (:func:`shape_errors`): a value of the wrong shape is reported alone,
    as the rules below assume every value has its field's shape.

    ``stored`` is the row ``values`` were merged from (server values plus a patch). A value
    that is the very object the row holds (identity, not equality, which would walk every
    list) was judged when written, so the rules of one value (shape, text, email, phone,
    address type, tax rate) skip it, and a device editing a phone number is not refused
    for an address stored before a rule tightened. The rules of the whole record (a name,
    the tenant's custom field definitions, which can change after a value is stored) see
    every value.

    ``shaped`` holds values whose shapes the caller has just checked (a push checks a
    change's patch before deciding it): the very same objects are not checked again.
    """
    fresh = (
        values
        if stored is None
        else {k: v for k, v in values.items() if k not in stored or stored[k] is not v}
    )
    unchecked = (
        fresh
        if shaped is None
        else {k: v for k, v in fresh.items() if k not in shaped or shaped[k] is not v}
    )
    errors = shape_errors(entity, unchecked)
    if errors:
        return errors
    for name, value in fresh.items():
        if name != "custom_fields" and not _strings_fit(value, max_length):
            _check_strings(value, camel(name), max_length, errors)
    if entity == "customer":
        _require_name(values, ("business_name", "first_name", "last_name"), errors)
        _check_email(fresh.get("email"), "email", errors)
        for field in ("notification_emails", "invoice_cc_emails"):
            for i, email in enumerate(fresh.get(field) or []):
                _check_email(email, f"{camel(field)}[{i}]", errors, item=True)
        _check_phones(fresh.get("phones"), errors)
        for i, address in enumerate(fresh.get("addresses") or []):
            if address.get("type") not in ADDRESS_TYPES:
                errors.setdefault(f"addresses[{i}].type", f"must be one of {sorted(ADDRESS_TYPES)}")
        rate = (fresh.get("settings") or {}).get("taxRate")
        if rate is not None and (not isinstance(rate, int | float) or not 0 <= rate <= 100):
            errors.setdefault("settings.taxRate", "must be between 0 and 100")
    elif entity == "contact":
        _require_name(values, ("first_name", "last_name"), errors)
        _check_email(fresh.get("email"), "email", errors)
        _check_phones(fresh.get("phones"), errors)
    elif entity == "facility":
        _require_name(values, ("name",), errors)
    elif entity == "asset":
        _require_name(values, ("kind",), errors)
    elif entity == "credential":
        _require_name(values, ("name",), errors)
        for name, limit in CREDENTIAL_LIMITS.items():
            if name in fresh and not _strings_fit(fresh[name], limit):
                _check_strings(fresh[name], camel(name), limit, errors)
    if "custom_fields" in values:
        validate_custom_fields(values.get("custom_fields"), definitions, errors)
    if "custom_fields" in fresh:
        for key, value in (fresh.get("custom_fields") or {}).items():
            if not _strings_fit(value, max_length):
                _check_strings(value, f"customFields.{path_segment(key)}", max_length, errors)
    return errors
