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


def complete_settings(stored: Mapping[str, Any]) -> dict[str, Any]:
    """All seven settings, unset (absent or null) ones at their defaults."""
    out = {}
    for key, default in SETTING_DEFAULTS.items():
        value = stored.get(key)
        out[key] = default if value is None else value
    return out


def complete_address(stored: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The address with every one of ``keys``, missing ones null (and no others)."""
    return {key: stored.get(key) for key in keys}


def _complete_customer(data: dict[str, Any]) -> None:
    data.pop("archived", None)
    if "settings" in data:
        data["settings"] = complete_settings(data["settings"])
    if data.get("addresses"):
        data["addresses"] = [complete_address(a, ADDRESS_KEYS) for a in data["addresses"]]


def _complete_facility(data: dict[str, Any]) -> None:
    if "address" in data:
        data["address"] = complete_address(data["address"] or {}, SITE_ADDRESS_KEYS)


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
