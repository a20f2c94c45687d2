"""Validation of a record's values, for online edits and device pushes alike.

Pure: takes the merged values of a record (server copy plus patch) and the tenant's custom
field definitions, returns ``{field path: message}``; empty means valid. Field paths use
the API's camelCase names (``email``, ``phones[1].number``, ``customFields.color``) so a
client can point at the input that needs fixing. A field made required after an offline
edit was taken fails here, and the device gets ``VALIDATION_FAILED`` to fix and push again.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

PHONE_TYPES = frozenset({"MOBILE", "HOME", "WORK", "FAX", "OTHER"})
ADDRESS_TYPES = frozenset({"BILL_TO", "SHIP_TO", "PHYSICAL"})
FIELD_TYPES = frozenset({"TEXT", "NUMBER", "DATE", "CHECKBOX", "DROPDOWN"})
MAX_LIST_ITEMS = 50
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
    labels = domain.split(".")
    if any(len(label) > _LABEL_MAX for label in labels):
        return False
    # Special-use names (and their subdomains): "test", "localhost", "onion", ...
    return not any(".".join(labels[i:]) in _SPECIAL_USE_DOMAINS for i in range(len(labels)))


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


def _check_strings(value: object, path: str, max_length: int, errors: dict[str, str]) -> None:
    if isinstance(value, str):
        if len(value) > max_length:
            errors.setdefault(path, f"is too long ({len(value)} characters, at most {max_length})")
        elif "\x00" in value:
            # PostgreSQL text and jsonb cannot hold NUL.
            errors.setdefault(path, "must not contain NUL characters")
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            _check_strings(inner, f"{path}.{camel(str(key))}", max_length, errors)
    elif isinstance(value, list | tuple):
        if len(value) > MAX_LIST_ITEMS:
            errors.setdefault(path, f"has too many items ({len(value)}, at most {MAX_LIST_ITEMS})")
        for i, inner in enumerate(value):
            _check_strings(inner, f"{path}[{i}]", max_length, errors)


def _check_email(value: object, path: str, errors: dict[str, str]) -> None:
    if not _blank(value) and (not isinstance(value, str) or not is_valid_email(value)):
        errors.setdefault(path, f"is not a valid email address: {value!r}")


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
    for key, value in given.items():
        definition = by_key.get(key)
        path = f"customFields.{key}"
        if definition is None:
            errors.setdefault(path, "is not a custom field of this record type")
        elif not _blank(value):
            problem = _check_custom_value(definition, value)
            if problem:
                errors.setdefault(path, f"{definition.label} {problem}")
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
) -> dict[str, str]:
    """Every problem with ``values`` of a record of type ``entity``, by field path."""
    errors: dict[str, str] = {}
    for name, value in values.items():
        if name != "custom_fields":
            _check_strings(value, camel(name), max_length, errors)
    if entity == "customer":
        _require_name(values, ("business_name", "first_name", "last_name"), errors)
        _check_email(values.get("email"), "email", errors)
        for field in ("notification_emails", "invoice_cc_emails"):
            for i, email in enumerate(values.get(field) or []):
                _check_email(email, f"{camel(field)}[{i}]", errors)
        _check_phones(values.get("phones"), errors)
        for i, address in enumerate(values.get("addresses") or []):
            if address.get("type") not in ADDRESS_TYPES:
                errors.setdefault(f"addresses[{i}].type", f"must be one of {sorted(ADDRESS_TYPES)}")
        rate = (values.get("settings") or {}).get("taxRate")
        if rate is not None and (not isinstance(rate, int | float) or not 0 <= rate <= 100):
            errors.setdefault("settings.taxRate", "must be between 0 and 100")
    elif entity == "contact":
        _require_name(values, ("first_name", "last_name"), errors)
        _check_email(values.get("email"), "email", errors)
        _check_phones(values.get("phones"), errors)
    elif entity == "facility":
        _require_name(values, ("name",), errors)
    elif entity == "asset":
        _require_name(values, ("kind",), errors)
    elif entity == "credential":
        _require_name(values, ("name",), errors)
        for name, limit in CREDENTIAL_LIMITS.items():
            _check_strings(values.get(name), camel(name), limit, errors)
    if "custom_fields" in values:
        validate_custom_fields(values.get("custom_fields"), definitions, errors)
        for key, value in (values.get("custom_fields") or {}).items():
            _check_strings(value, f"customFields.{key}", max_length, errors)
    return errors
