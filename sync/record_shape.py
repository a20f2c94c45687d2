"""The sync shape of a record: what a pull's ``Change.data`` holds, and what a patch sends.

One shape per record type, in both directions: a device stores ``data`` as it comes and may
send it back as a patch, whole or any part of it, and the next pull returns exactly what it
sent. So ``data`` is complete and explicit:

- customer ``settings`` always has its seven keys, unset ones at their defaults (the values
  the read API shows);
- every customer address and a facility's address has all of its keys, missing ones null;
- ``archived`` is not part of a customer's data: archived customers never sync (devices are
  told to evict them), and no patch may set it.

Rows store only what was written (a settings object of the keys someone set, an address
without the lines nobody entered), so the completion is applied where a pull builds
``data`` (``db/pull.py``'s ``_change``, the hot path of an initial sync: assets, contacts and
credentials need none and cost nothing), and to the live subscription's rows.

Pure and standard-library only, like the rest of ``sync``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sync.validation import camel

# The defaults of unset settings: what the read API's CustomerSettings shows for them.
SETTING_DEFAULTS: Mapping[str, object] = {
    "taxFree": False,
    "taxRate": None,
    "smsEnabled": False,
    "billingEmails": True,
    "marketingEmails": False,
    "reportEmails": True,
    "noEmail": False,
}
SITE_ADDRESS_KEYS = ("line1", "line2", "city", "region", "postalCode", "country")
ADDRESS_KEYS = ("type", *SITE_ADDRESS_KEYS)

# Stored fields that are not part of a record's sync shape (column names), with why:
# ``archived`` is visibility, not data (an archived customer's records are evicted).
UNSYNCED_FIELDS: Mapping[str, frozenset[str]] = {"customer": frozenset({"archived"})}

# A record's parents as a patch may name them (column names). A record never moves: on an
# update a given link must be the record's own.
LINKS = ("customer_id", "facility_id")
CANNOT_MOVE = "must be the record's own: records cannot move"
NOT_THE_FACILITYS_CUSTOMER = "must be the customer of the asset's facility"


# (key, default) pairs in the read API's order: one pass over them builds the settings.
_SETTING_PAIRS = tuple(SETTING_DEFAULTS.items())
# Tells a key that is absent from one that holds null, in one dictionary lookup.
_ABSENT: Any = object()


def complete_settings(stored: Mapping[str, Any]) -> dict[str, Any]:
    """All seven settings, unset (absent or null) ones at their defaults."""
    get = stored.get
    return {
        key: default if (value := get(key)) is None else value for key, default in _SETTING_PAIRS
    }


def complete_address(stored: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The address with every one of ``keys``, missing ones null (and no others)."""
    get = stored.get
    return {key: get(key) for key in keys}


def _complete_customer(data: dict[str, Any]) -> None:
    data.pop("archived", None)
    settings = data.get("settings", _ABSENT)
    if settings is not _ABSENT:
        data["settings"] = complete_settings(settings)
    addresses = data.get("addresses")
    if addresses:
        data["addresses"] = [complete_address(a, ADDRESS_KEYS) for a in addresses]


def _complete_facility(data: dict[str, Any]) -> None:
    address = data.get("address", _ABSENT)
    if address is not _ABSENT:
        data["address"] = complete_address(address or {}, SITE_ADDRESS_KEYS)


# Record types whose stored data needs completing; the others are complete as stored.
COMPLETERS: Mapping[str, Callable[[dict[str, Any]], None]] = {
    "customer": _complete_customer,
    "facility": _complete_facility,
}


def complete(entity: str, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (API names, as a pull reads it from a row) in its sync shape; changed in
    place and returned. ``entity`` is the record type (``customer``, ``asset``, ...)."""
    completer = COMPLETERS.get(entity)
    if completer is not None:
        completer(data)
    return data


def link_errors(
    given: Mapping[str, object], expected: Mapping[str, object], *, new: bool
) -> dict[str, str]:
    """Why a patch's links (column -> id) cannot apply, by API field name.

    ``expected`` are the record's links: its own for an update (``new`` false), or those
    of a record the change creates, as its parents say (an asset's customer is its
    facility's). A device sends back the ``customerId`` and ``facilityId`` it pulled; a
    record never moves to another parent, so any other value is refused.
    """
    message = NOT_THE_FACILITYS_CUSTOMER if new else CANNOT_MOVE
    return {
        camel(link): message
        for link, value in given.items()
        if link in expected and value != expected[link]
    }
