"""The external-system sync window's rules, pure: no database, no GraphQL.

An admin connects an external system (accounting, ERP) as a *source* with a field mapping
from its columns to customer fields. Each import is the source's full customer list. This
module parses and checks an import, compares each linked pair three ways and decides what
happens to it:

- **Parsing** (:func:`parse_import`): UTF-8 only (a BOM is allowed), CSV with a header row
  or JSON (an array of objects). Every mapped column must be present. Each row is checked
  (external id present and unique, email well formed and unique, phone well formed, a name
  when names are mapped, the active flag readable); problems come back with their line
  numbers, and the caller refuses the whole import when there is any.
- **Three-way comparison** (:func:`compare`): per mapped field, the last-synced value of a
  pair against its local and external values tells which side changed since the last sync.
  A field changed on one side only is never a conflict; a field both sides changed to
  different values is.
- **Direction** (:class:`Direction`): which one-sided changes are applied automatically.
- **Category** (:func:`categorise`): where a pair shows in the window.
"""

from __future__ import annotations

import csv
import enum
import io
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from sync.validation import camel, text_problem, validate_record

# Customer fields a source may map to, by API name, with the stored (column) name.
FIELDS: Mapping[str, str] = {
    "businessName": "business_name",
    "firstName": "first_name",
    "lastName": "last_name",
    "email": "email",
    "phone": "phone",
}
NAME_FIELDS = ("business_name", "first_name", "last_name")
EXTERNAL_ID = "externalId"
ACTIVE = "active"
TARGETS = (EXTERNAL_ID, ACTIVE, *FIELDS)

_TRUE = frozenset({"", "1", "true", "yes", "y", "active", "a"})
_FALSE = frozenset({"0", "false", "no", "n", "inactive", "i"})
UTF8_BOM = b"\xef\xbb\xbf"
_PHONE_SHAPED = re.compile(r"[+-][0-9()\-. /x#*]*")
# External ids key the pairs' primary key (a btree, whose entries hold at most 2,704
# bytes): 500 characters are at most 2,000 bytes of UTF-8, and far more than any system's
# customer number.
MAX_EXTERNAL_ID = 500
# Source names (uniquely indexed too), kinds, mapped column names and file names.
MAX_NAME = 500

Values = dict[str, str | None]


class Direction(enum.StrEnum):
    """Which side's one-sided changes flow automatically at an import.

    - ``EXTERNAL_TO_LOCAL``: the external system is the master. A field changed only
      externally is written to the customer; a field changed only locally is set back to
      the external value.
    - ``LOCAL_TO_EXTERNAL``: fieldsync is the master. Nothing is written to customers
      automatically; the local values go out with the export.
    - ``BOTH``: a field changed only externally is written to the customer; a field changed
      only locally stays and goes out with the export.
    """

    EXTERNAL_TO_LOCAL = "EXTERNAL_TO_LOCAL"
    LOCAL_TO_EXTERNAL = "LOCAL_TO_EXTERNAL"
    BOTH = "BOTH"


class Category(enum.StrEnum):
    """Where a pair shows in the sync window."""

    CONFLICT = "CONFLICT"
    NEW_LOCAL = "NEW_LOCAL"
    NEW_EXTERNAL = "NEW_EXTERNAL"
    DELETED = "DELETED"
    DEACTIVATED = "DEACTIVATED"
    SYNCHRONIZED = "SYNCHRONIZED"
    INACTIVE = "INACTIVE"


class Side(enum.StrEnum):
    """One side of a pair."""

    LOCAL = "LOCAL"
    EXTERNAL = "EXTERNAL"


# --------------------------------------------------------------------------- mapping


def mapping_problems(mapping: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Problems of a column -> target mapping, by ``mapping[i]`` path; empty when valid.

    Targets are API field names (:data:`TARGETS`); exactly one column holds the external
    id, and each column and target appears once.
    """
    problems: dict[str, str] = {}
    seen_columns: set[str] = set()
    seen_targets: set[str] = set()
    for i, (column, target) in enumerate(mapping):
        path = f"mapping[{i}]"
        column_problem = text_problem(column, MAX_NAME)
        if not column.strip():
            problems[f"{path}.column"] = "is empty"
        elif column_problem is not None:
            problems[f"{path}.column"] = column_problem
        elif column in seen_columns:
            problems[f"{path}.column"] = f"{column!r} is mapped twice"
        if target not in TARGETS:
            problems[f"{path}.field"] = (
                f"{target!r} is not a customer field that can be synced; use one of "
                + ", ".join(TARGETS)
            )
        elif target in seen_targets:
            problems[f"{path}.field"] = f"{target!r} is mapped from two columns"
        seen_columns.add(column)
        seen_targets.add(target)
    if EXTERNAL_ID not in seen_targets:
        problems["mapping"] = f"one column must map to {EXTERNAL_ID!r}"
    return problems


def mapped_fields(mapping: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """The stored names of the customer fields a mapping syncs, in mapping order."""
    return tuple(FIELDS[t] for _, t in mapping if t in FIELDS)


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class RowProblem:
    """One bad row (or the whole file, line 0) and why."""

    line: int
    reason: str
    column: str | None = None


@dataclass(frozen=True)
class ExternalRow:
    """One checked row: its external id, mapped values (stored names) and active flag."""

    line: int
    external_id: str
    values: Values
    active: bool


@dataclass(frozen=True)
class ParsedImport:
    """Rows of an import, or the problems that refuse it (never both kinds of result)."""

    rows: list[ExternalRow] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)


class ImportFormat(enum.StrEnum):
    """File formats an import may come in."""

    CSV = "CSV"
    JSON = "JSON"


def sniff_format(data: bytes, file_name: str | None) -> ImportFormat:
    """JSON for ``.json`` names or content that opens with ``[``/``{``; CSV otherwise."""
    if file_name:
        lower = file_name.lower()
        if lower.endswith(".json"):
            return ImportFormat.JSON
        if lower.endswith(".csv"):
            return ImportFormat.CSV
    head = data.removeprefix(UTF8_BOM).lstrip()[:1]
    return ImportFormat.JSON if head in (b"[", b"{") else ImportFormat.CSV


def decode(data: bytes) -> str | RowProblem:
    """The text of an import: UTF-8, an optional BOM dropped; a problem otherwise."""
    try:
        return data.removeprefix(UTF8_BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return RowProblem(
            line,
            f"the file is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start});"
            " save or export it as UTF-8",
        )


def parse_import(
    data: bytes,
    mapping: Sequence[tuple[str, str]],
    file_format: ImportFormat,
    *,
    max_bytes: int,
    max_length: int = 10_000,
) -> ParsedImport:
    """Decode, parse and check a whole import; any problem refuses it (listed by line)."""
    if len(data) > max_bytes:
        return ParsedImport(
            problems=[RowProblem(0, f"the file has {len(data)} bytes; at most {max_bytes}")]
        )
    text = decode(data)
    if isinstance(text, RowProblem):
        return ParsedImport(problems=[text])
    if file_format is ImportFormat.JSON:
        raw = _json_rows(text, mapping)
    else:
        raw = _csv_rows(text, mapping)
    if isinstance(raw, RowProblem):
        return ParsedImport(problems=[raw])
    return check_rows(raw, mapping, max_length=max_length)


def _missing_columns(
    header: Sequence[str], mapping: Sequence[tuple[str, str]]
) -> RowProblem | None:
    wanted = [column for column, _ in mapping]
    missing = [c for c in wanted if c not in header]
    if not missing:
        return None
    unknown = [c for c in header if c not in wanted]
    message = "the header lacks the mapped column(s) " + ", ".join(repr(c) for c in missing)
    if unknown:
        message += "; it has unmapped column(s) " + ", ".join(repr(c) for c in unknown)
    return RowProblem(1, message + ": fix the file or the source's mapping")


def _csv_rows(
    text: str, mapping: Sequence[tuple[str, str]]
) -> list[tuple[int, Mapping[str, Any]]] | RowProblem:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return RowProblem(1, "the file is empty: a header row is needed")
        header = [h.strip() for h in header]
        duplicated = sorted({h for h in header if header.count(h) > 1})
        if duplicated:
            return RowProblem(1, "the header repeats column(s) " + ", ".join(map(repr, duplicated)))
        missing = _missing_columns(header, mapping)
        if missing is not None:
            return missing
        rows: list[tuple[int, Mapping[str, Any]]] = []
        line = reader.line_num + 1
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                line = reader.line_num + 1
                continue
            if len(cells) != len(header):
                rows.append((line, {"": f"has {len(cells)} cells; the header has {len(header)}"}))
            else:
                rows.append((line, dict(zip(header, cells, strict=True))))
            line = reader.line_num + 1
    except csv.Error as exc:
        return RowProblem(reader.line_num, f"the CSV cannot be read: {exc}")
    return rows


def _json_rows(
    text: str, mapping: Sequence[tuple[str, str]]
) -> list[tuple[int, Mapping[str, Any]]] | RowProblem:
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return RowProblem(getattr(exc, "lineno", 0), f"the JSON cannot be read: {exc}")
    if isinstance(document, dict) and isinstance(document.get("records"), list):
        document = document["records"]
    if not isinstance(document, list):
        return RowProblem(1, 'JSON imports are an array of objects (or {"records": [...]})')
    rows: list[tuple[int, Mapping[str, Any]]] = []
    columns: set[str] = set()
    for position, item in enumerate(document, start=1):
        if not isinstance(item, dict):
            rows.append((position, {"": "is not an object"}))
            continue
        columns.update(item)
        rows.append((position, item))
    if document:
        missing = _missing_columns(sorted(columns), mapping)
        if missing is not None:
            return RowProblem(0, missing.reason.replace("the header lacks", "no record has"))
    return rows


def _cell(value: object) -> str | RowProblem | None:
    """A JSON or CSV cell as trimmed text (None when blank)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        text = str(value).strip()
        return text or None
    return RowProblem(0, "must be text, a number, true/false or null")


def check_rows(
    raw: Iterable[tuple[int, Mapping[str, Any]]],
    mapping: Sequence[tuple[str, str]],
    *,
    max_length: int = 10_000,
) -> ParsedImport:
    """Check parsed rows against the mapping; all rows, or every problem by line."""
    problems: list[RowProblem] = []
    rows: list[ExternalRow] = []
    ids: dict[str, int] = {}
    emails: dict[str, int] = {}
    names_mapped = any(FIELDS.get(t) in NAME_FIELDS for _, t in mapping)
    for line, item in raw:
        if "" in item and len(item) == 1:
            problems.append(RowProblem(line, f"the row {item['']}"))
            continue
        row_problems: list[RowProblem] = []
        cells: dict[str, str | None] = {}
        for column, target in mapping:
            value = _cell(item.get(column))
            if isinstance(value, RowProblem):
                row_problems.append(RowProblem(line, value.reason, column))
                value = None
            cells[target] = value
        bad_cells = bool(row_problems)
        external_id = cells.get(EXTERNAL_ID)
        id_problem = None if external_id is None else text_problem(external_id, MAX_EXTERNAL_ID)
        if external_id is None:
            row_problems.append(
                RowProblem(line, "the external id is missing", _column(mapping, EXTERNAL_ID))
            )
        elif id_problem is not None:
            row_problems.append(
                RowProblem(line, f"the external id {id_problem}", _column(mapping, EXTERNAL_ID))
            )
        elif external_id in ids:
            row_problems.append(
                RowProblem(
                    line,
                    f"duplicate external id {external_id!r} (also on line {ids[external_id]})",
                    _column(mapping, EXTERNAL_ID),
                )
            )
        else:
            ids[external_id] = line
        active = True
        if ACTIVE in cells:
            flag = (cells[ACTIVE] or "").lower()
            if flag in _FALSE:
                active = False
            elif flag not in _TRUE:
                row_problems.append(
                    RowProblem(
                        line,
                        f"{cells[ACTIVE]!r} is not yes/no or active/inactive",
                        _column(mapping, ACTIVE),
                    )
                )
        values: Values = {FIELDS[t]: v for t, v in cells.items() if t in FIELDS}
        if not bad_cells:
            # A cell of the wrong type was already named; its blank stand-in would only
            # add a second, misleading problem.
            row_problems.extend(_value_problems(line, values, mapping, names_mapped, max_length))
        email = values.get("email")
        if email is not None and active:
            key = email.lower()
            if key in emails:
                row_problems.append(
                    RowProblem(
                        line,
                        f"email {email!r} is also on line {emails[key]}: primary emails are unique",
                        _column(mapping, "email"),
                    )
                )
            else:
                emails[key] = line
        if row_problems:
            problems.extend(row_problems)
        elif external_id is not None:
            rows.append(ExternalRow(line, external_id, values, active))
    if problems:
        return ParsedImport(problems=problems)
    return ParsedImport(rows=rows)


def _column(mapping: Sequence[tuple[str, str]], target: str) -> str | None:
    return next((c for c, t in mapping if t == target), None)


def _value_problems(
    line: int,
    values: Values,
    mapping: Sequence[tuple[str, str]],
    names_mapped: bool,
    max_length: int,
) -> Iterator[RowProblem]:
    """Malformed emails, phones, over-long text and missing names, via customer validation."""
    record: dict[str, Any] = {k: v for k, v in values.items() if k != "phone"}
    if values.get("phone"):
        record["phones"] = [{"type": "WORK", "number": values["phone"]}]
    if not names_mapped:
        # Validation wants a name; a mapping without names leaves them to the customer.
        record["business_name"] = "-"
    errors = validate_record("customer", record, [], max_length=max_length)
    by_api_name = {camel(stored): api for api, stored in FIELDS.items()}
    for path, message in errors.items():
        api = "phone" if path.startswith("phones") else by_api_name.get(path, path)
        if path == "businessName" and "give a" in message:
            yield RowProblem(line, "a business name or a first or last name is needed")
        else:
            yield RowProblem(line, f"{api} {message}", _column(mapping, api))


# --------------------------------------------------------------------------- local side


def local_values(row: Mapping[str, Any], fields: Sequence[str]) -> Values:
    """A customer row's values of the synced fields (the phone is its first number)."""
    out: Values = {}
    for name in fields:
        if name == "phone":
            out[name] = _first_number(row.get("phones"))
        else:
            out[name] = row.get(name)
    return out


def _phones(value: object) -> list[dict[str, Any]]:
    """Stored phones as a list of objects; anything else (a row written before values were
    shape-checked) reads as none, so the window and the export never fail on it."""
    if not isinstance(value, list):
        return []
    return [dict(p) for p in value if isinstance(p, Mapping)]


def _first_number(phones: object) -> str | None:
    found = _phones(phones)
    number = found[0].get("number") if found else None
    return number if isinstance(number, str) else None


def customer_patch(
    current: Mapping[str, Any] | None, values: Mapping[str, str | None]
) -> dict[str, Any]:
    """A write-path patch setting the synced fields of a customer to ``values``.

    The phone replaces the number of the first phone (keeping its type), adds a work phone
    when there is none, and removes the first phone when cleared.
    """
    patch: dict[str, Any] = {}
    for name, value in values.items():
        if name != "phone":
            patch[name] = value
            continue
        phones = _phones((current or {}).get("phones"))
        if value is None:
            phones = phones[1:]
        elif phones:
            phones[0]["number"] = value
        else:
            phones = [{"type": "WORK", "number": value}]
        patch["phones"] = phones
    return patch


# --------------------------------------------------------------------------- comparison


def normalised(name: str, value: object) -> str | None:
    """The comparable form of a value: trimmed text, blank as None, emails lower-cased."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    return text.lower() if name == "email" else text


@dataclass(frozen=True)
class Comparison:
    """One pair's fields sorted by which side changed since the last sync."""

    agreed: Values = field(default_factory=dict)
    local_only: Values = field(default_factory=dict)
    external_only: Values = field(default_factory=dict)
    # The external value of each local-only field (what reverting it would write).
    local_only_external: Values = field(default_factory=dict)
    # field -> (local value, external value)
    conflicts: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)


def compare(
    fields: Sequence[str],
    synced: Mapping[str, str | None] | None,
    local: Mapping[str, str | None],
    external: Mapping[str, str | None],
) -> Comparison:
    """Three-way comparison of each field: last-synced vs local vs external.

    Equal sides agree. Otherwise the side still equal to the last-synced value did not
    change, so the other side's change is one-sided. Both changed (or no last-synced value
    yet, as for a fresh pair) is a conflict.
    """
    agreed: Values = {}
    local_only: Values = {}
    local_only_external: Values = {}
    external_only: Values = {}
    conflicts: dict[str, tuple[str | None, str | None]] = {}
    for name in fields:
        lv, ev = local.get(name), external.get(name)
        ln, en = normalised(name, lv), normalised(name, ev)
        if ln == en:
            agreed[name] = lv
            continue
        if synced is None or name not in synced:
            conflicts[name] = (lv, ev)
            continue
        sn = normalised(name, synced[name])
        if sn == ln:
            external_only[name] = ev
        elif sn == en:
            local_only[name] = lv
            local_only_external[name] = ev
        else:
            conflicts[name] = (lv, ev)
    return Comparison(agreed, local_only, external_only, local_only_external, conflicts)


@dataclass(frozen=True)
class Plan:
    """What to do with one linked pair: values to write to the customer, the new
    last-synced values, fields waiting for the export, and the conflicts left."""

    apply_local: Values
    synced: Values
    pending_export: tuple[str, ...]
    conflicts: dict[str, tuple[str | None, str | None]]


def plan(
    direction: Direction,
    comparison: Comparison,
    synced: Mapping[str, str | None] | None,
    *,
    auto_apply: bool = True,
) -> Plan:
    """The automatic part of a sync run for one pair, per the source's direction.

    Agreed fields become the last-synced value. With ``auto_apply`` false (an admin action
    re-sorting one pair) nothing is written and one-sided changes stay as they are.
    """
    new_synced: Values = dict(synced or {})
    new_synced.update(comparison.agreed)
    apply_local: Values = {}
    pending: list[str] = []
    take_external = auto_apply and direction is not Direction.LOCAL_TO_EXTERNAL
    for name, value in comparison.external_only.items():
        if take_external:
            apply_local[name] = value
            new_synced[name] = value
        else:
            pending.append(name)
    revert_local = auto_apply and direction is Direction.EXTERNAL_TO_LOCAL
    for name in comparison.local_only:
        if revert_local:
            # The external system is the master: its (unchanged) value comes back.
            value = comparison.local_only_external[name]
            apply_local[name] = value
            new_synced[name] = value
        else:
            pending.append(name)
    return Plan(apply_local, new_synced, tuple(sorted(pending)), dict(comparison.conflicts))


@dataclass(frozen=True)
class PairState:
    """What the categorisation needs to know about one pair."""

    linked: bool
    sync_active: bool = True
    external_active: bool = True
    external_deleted: bool = False
    local_deleted: bool = False
    has_conflicts: bool = False


def categorise(state: PairState) -> Category | None:
    """The window category of a pair of an external record; None hides it.

    An unlinked record that left the external system is simply gone. A linked pair is
    DEACTIVATED when its sync is off, DELETED when either side is gone, CONFLICT with a
    field changed on both sides, SYNCHRONIZED otherwise. Inactive external records only
    matter while unlinked: they are not matched by email and show as INACTIVE.
    """
    if not state.linked:
        if state.external_deleted:
            return None
        return Category.NEW_EXTERNAL if state.external_active else Category.INACTIVE
    if not state.sync_active:
        return Category.DEACTIVATED
    if state.external_deleted or state.local_deleted:
        return Category.DELETED
    return Category.CONFLICT if state.has_conflicts else Category.SYNCHRONIZED


def resolve(
    conflicts: Mapping[str, tuple[str | None, str | None]],
    keep: Side,
    fields: Iterable[str],
    synced: Mapping[str, str | None] | None,
) -> tuple[Values, Values]:
    """An admin keeps one side of some conflicting fields: (customer patch values, new
    last-synced values).

    Keeping external writes the external value locally and records it as synced. Keeping
    local records the *external* value as last-synced, so the local value reads as a
    local change since the last sync: it goes out with the export, and a later import of
    the unchanged external value does not bring a conflict back.
    """
    apply_local: Values = {}
    new_synced: Values = dict(synced or {})
    for name in fields:
        _, external = conflicts[name]
        if keep is Side.EXTERNAL:
            apply_local[name] = external
        new_synced[name] = external
    return apply_local, new_synced


def export_csv(
    mapping: Sequence[tuple[str, str]], rows: Iterable[tuple[str | None, Values]]
) -> str:
    """CSV of local values under the source's column names; ``rows`` are (external id or
    None for records new here, values). The active column, if mapped, says ``active``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([column for column, _ in mapping])
    for external_id, values in rows:
        line: list[str] = []
        for _, target in mapping:
            if target == EXTERNAL_ID:
                line.append(external_id or "")
            elif target == ACTIVE:
                line.append("active")
            else:
                line.append(_csv_safe(values.get(FIELDS[target]) or ""))
        writer.writerow(line)
    return out.getvalue()


def _csv_safe(value: str) -> str:
    """Neutralise spreadsheet formulas (CSV injection): a leading = + - @ gets a quote.

    Phone numbers start with + legitimately; phone-shaped values are kept as they are.
    """
    if value[:1] in ("=", "@", "\t", "\r") or (
        value[:1] in ("+", "-") and not _PHONE_SHAPED.fullmatch(value)
    ):
        return "'" + value
    return value
