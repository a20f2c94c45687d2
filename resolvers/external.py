"""The external-system sync window: admin-only queries and mutations (thin hand-offs)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any
from uuid import UUID

import orjson
import strawberry
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.datastructures import UploadFile
from strawberry.file_uploads import Upload

from db.commands import window_actions, window_audit, window_imports, window_runs, window_sources
from db.errors import DomainError
from db.queries import external as queries
from db.queries.pages import Row
from resolvers.context import CurrentUser, Info, PublicError
from resolvers.writes import page_size, run_write
from schema.errors import Forbidden, NotFound, UserError, error_from, forbidden, invalid, not_found
from schema.external import (
    ConflictResolutionInput,
    CreateExternalSourceInput,
    ExternalSource,
    ExternalSourceResult,
    FieldMappingInput,
    ImportBatch,
    ImportFormat,
    ImportRefused,
    ImportResult,
    PairInput,
    SyncActionPayload,
    SyncActionResult,
    SyncCategory,
    SyncItemRefusal,
    SyncRefreshPayload,
    SyncRefreshResult,
    SyncWindow,
    UpdateExternalSourceInput,
    category_counts,
    pair_from_row,
)
from schema.node import InvalidIdError, from_global_id, to_global_id
from schema.pagination import After, first_doc
from sync import window as rules

ADMINS_ONLY = "only admins may use the external sync window"


SourceId = Annotated[
    strawberry.ID, strawberry.argument(description="The external source's global `id`.")
]
PairedIds = Annotated[
    list[str],
    strawberry.argument(
        description="External ids of paired records; unpaired ones are refused (NOT_LINKED)."
    ),
]


def _actor(user: CurrentUser) -> window_audit.Actor:
    return window_audit.Actor(id=user.id, name=user.email)


ADMINS_MANAGE_SOURCES = "only admins may manage external sources"


def _admin(user: CurrentUser) -> bool:
    return user.is_admin


async def _admin_user(info: Info) -> CurrentUser:
    """The caller, who must be an admin (queries answer FORBIDDEN otherwise)."""
    user = await info.context.user()
    if not user.is_admin:
        raise PublicError(ADMINS_ONLY, "FORBIDDEN")
    return user


def _source_id(global_id: str) -> UUID:
    """The uuid of an ExternalSource id; raises InvalidIdError."""
    return from_global_id(global_id, "ExternalSource")[1]


async def _admin_and_source(
    info: Info, source_id: str
) -> tuple[CurrentUser, UUID] | Forbidden | NotFound:
    """The caller, who must be an admin, and the source's uuid; or the error to return."""
    user = await info.context.user()
    if not user.is_admin:
        return forbidden(ADMINS_ONLY)
    try:
        return user, _source_id(source_id)
    except InvalidIdError as exc:
        return not_found(source_id, str(exc))


def _mapping(items: Sequence[FieldMappingInput]) -> list[tuple[str, str]]:
    return [(item.column, item.field) for item in items]


def _encode_cursor(key: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode()


def _decode_cursor(cursor: str) -> list[Any]:
    try:
        key = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError) as exc:
        raise PublicError(f"invalid cursor {cursor!r}", "BAD_USER_INPUT") from exc
    if not isinstance(key, list) or not key:
        raise PublicError(f"invalid cursor {cursor!r}", "BAD_USER_INPUT")
    return key


async def _pairs(
    conn: AsyncConnection,
    org_id: UUID,
    source: Row,
    rows: Sequence[Row],
    *,
    category: rules.Category | None = None,
) -> list[Any]:
    """Window lines for rows, with their audit trails read in one query."""
    fields = rules.mapped_fields(window_sources.source_mapping(source))
    external_ids = [r["external_id"] for r in rows if r.get("external_id")]
    customer_ids = [r["c_id"] for r in rows if not r.get("external_id") and r.get("c_id")]
    audit = await queries.audit_entries(
        conn, org_id, source["id"], external_ids=external_ids, customer_ids=customer_ids
    )
    out = []
    for row in rows:
        if row.get("external_id"):
            trail = [a for a in audit if a["external_id"] == row["external_id"]]
        else:
            trail = [a for a in audit if a["customer_id"] == row["c_id"]]
        out.append(pair_from_row(row, fields, trail, category=category))
    return out


async def _source_or_error(conn: AsyncConnection, org_id: UUID, global_id: str) -> Row | UserError:
    try:
        source_id = _source_id(global_id)
    except InvalidIdError as exc:
        return not_found(global_id, str(exc))
    source = await queries.get_source(conn, org_id, source_id)
    if source is None:
        return not_found(global_id, f"external source {global_id} not found")
    return source


@strawberry.type
class ExternalSyncQueries:
    """Reads of the external sync window (admins only)."""

    @strawberry.field(description="Connected external systems, by name (admins only).")
    async def external_sources(self, info: Info) -> list[ExternalSource]:
        """Every source of the tenant."""
        user = await _admin_user(info)
        async with info.context.read() as conn:
            rows = await queries.list_sources(conn, user.org_id)
        return [ExternalSource.from_row(r) for r in rows]

    @strawberry.field(
        description="The sync window of a source: every category's count and a page of one"
        " category (admins only)."
    )
    async def sync_window(
        self,
        info: Info,
        source_id: Annotated[
            strawberry.ID,
            strawberry.argument(
                description="The external source's global `id`. An unknown source gives null."
            ),
        ],
        category: Annotated[
            SyncCategory, strawberry.argument(description="The category to page through.")
        ],
        first: Annotated[int, strawberry.argument(description=first_doc(20, "pairs"))] = 20,
        after: After = None,
    ) -> SyncWindow | None:
        """A keyset page of one category; null for an unknown source."""
        user = await _admin_user(info)
        first = page_size(info, first)
        wanted = rules.Category(category.name)
        async with info.context.read() as conn:
            source = await _source_or_error(conn, user.org_id, source_id)
            if not isinstance(source, dict):
                return None
            counts = await queries.category_counts(conn, user.org_id, source["id"])
            key = _decode_cursor(after) if after else None
            if wanted is rules.Category.NEW_LOCAL:
                bound = (str(key[0]), UUID(str(key[1]))) if key and len(key) == 2 else None
                rows, has_next = await queries.new_local_page(
                    conn, user.org_id, source["id"], after=bound, first=first
                )
                cursor = (
                    _encode_cursor([rows[-1]["sort_name"], str(rows[-1]["c_id"])]) if rows else None
                )
            else:
                rows, has_next = await queries.pair_page(
                    conn,
                    user.org_id,
                    source["id"],
                    wanted,
                    after=str(key[0]) if key else None,
                    first=first,
                )
                cursor = _encode_cursor([rows[-1]["external_id"]]) if rows else None
            pairs = await _pairs(conn, user.org_id, source, rows, category=wanted)
        return SyncWindow(
            source=ExternalSource.from_row(source),
            category=category,
            counts=category_counts(counts),
            pairs=pairs,
            total_count=counts[wanted],
            has_next_page=has_next,
            end_cursor=cursor,
        )

    @strawberry.field(description="A source's imports, newest first (admins only).")
    async def import_batches(
        self,
        info: Info,
        source_id: Annotated[
            strawberry.ID,
            strawberry.argument(
                description="The external source's global `id`. An unknown source gives an empty"
                " list."
            ),
        ],
        first: Annotated[
            int, strawberry.argument(description=first_doc(20, "imports, newest first"))
        ] = 20,
    ) -> list[ImportBatch]:
        """Recent batches; empty for an unknown source."""
        user = await _admin_user(info)
        async with info.context.read() as conn:
            source = await _source_or_error(conn, user.org_id, source_id)
            if not isinstance(source, dict):
                return []
            rows = await queries.batches(
                conn, user.org_id, source["id"], limit=page_size(info, first)
            )
        return [ImportBatch.from_row(r) for r in rows]

    @strawberry.field(
        description="The local side of paired (sync on) and NEW_LOCAL customers as CSV, in the"
        " source's columns, to load into the external system (admins only)."
    )
    async def export_local(
        self,
        info: Info,
        source_id: SourceId,
    ) -> str:
        """CSV text; NEW_LOCAL rows have an empty external id."""
        user = await _admin_user(info)
        async with info.context.read() as conn:
            source = await _source_or_error(conn, user.org_id, source_id)
            if not isinstance(source, dict):
                raise PublicError(f"external source {source_id} not found", "NOT_FOUND")
            rows = await queries.export_rows(conn, user.org_id, source["id"])
        mapping = window_sources.source_mapping(source)
        fields = rules.mapped_fields(mapping)
        return rules.export_csv(
            mapping, ((r["external_id"], rules.local_values(r, fields)) for r in rows)
        )


# A window action of ``db.commands.window_actions``: called with the connection and ``org_id``,
# ``source_id`` and ``actor`` by keyword, plus the action's own arguments.
Command = Callable[..., Awaitable[window_actions.ActionOutcome]]


async def _action(
    info: Info,
    source_id: str,
    command: Command,
    *,
    refused: Sequence[SyncItemRefusal] = (),
    **arguments: Any,
) -> SyncActionResult | UserError:
    """Run one window action in a transaction and shape its result; ``refused`` lists the
    items the resolver turned away before the action ran."""
    caller = await _admin_and_source(info, source_id)
    if isinstance(caller, Forbidden | NotFound):
        return caller
    user, uuid = caller
    try:
        async with info.context.write() as conn:
            outcome = await command(
                conn, org_id=user.org_id, source_id=uuid, actor=_actor(user), **arguments
            )
            source = await queries.get_source(conn, user.org_id, uuid)
            assert source is not None
            rows = await queries.pairs_by_external_id(conn, user.org_id, uuid, outcome.external_ids)
            pairs = await _pairs(
                conn, user.org_id, source, [rows[e] for e in outcome.external_ids if e in rows]
            )
    except DomainError as exc:
        return error_from(exc, source_id)
    return SyncActionResult(
        pairs=pairs,
        new_local_customer_ids=[to_global_id("Customer", c) for c in outcome.customer_ids],
        refused=[
            *refused,
            *(
                SyncItemRefusal(external_id=r.key, code=r.code, message=r.message)
                for r in outcome.refused
            ),
        ],
    )


def _customer_uuid(global_id: str) -> UUID | None:
    try:
        return from_global_id(global_id, "Customer")[1]
    except InvalidIdError:
        return None


@strawberry.type
class ExternalSyncMutations:
    """Writes of the external sync window (admins only); each action works on one or many
    records in one transaction and reports the items it refused."""

    @strawberry.mutation(
        description="Register an external system with its field mapping (admins only).",
        graphql_type=ExternalSourceResult,
    )
    async def create_external_source(
        self,
        info: Info,
        input: Annotated[
            CreateExternalSourceInput,
            strawberry.argument(description="The new source and its field mapping."),
        ],
    ) -> ExternalSource | UserError:
        """New source; a mapping to a field that does not exist is refused."""
        result = await run_write(
            info,
            lambda conn, user: window_sources.create_source(
                conn,
                org_id=user.org_id,
                name=input.name,
                kind=input.kind,
                direction=rules.Direction(input.direction.name),
                mapping=_mapping(input.mapping),
            ),
            allowed=_admin,
            refusal=ADMINS_MANAGE_SOURCES,
        )
        return ExternalSource.from_row(result) if isinstance(result, dict) else result

    @strawberry.mutation(
        description="Change a source's direction or mapping (admins only).",
        graphql_type=ExternalSourceResult,
    )
    async def update_external_source(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID, strawberry.argument(description="The external source's global `id`.")
        ],
        input: Annotated[
            UpdateExternalSourceInput,
            strawberry.argument(
                description="The fields to change; omitted fields keep their values."
            ),
        ],
    ) -> ExternalSource | UserError:
        """Source changes apply from the next import or refresh."""
        try:
            source_id = _source_id(id)
        except InvalidIdError as exc:
            return not_found(id, str(exc))
        result = await run_write(
            info,
            lambda conn, user: window_sources.update_source(
                conn,
                org_id=user.org_id,
                source_id=source_id,
                direction=rules.Direction(input.direction.name) if input.direction else None,
                mapping=_mapping(input.mapping) if input.mapping is not None else None,
            ),
            client_id=id,
            allowed=_admin,
            refusal=ADMINS_MANAGE_SOURCES,
        )
        return ExternalSource.from_row(result) if isinstance(result, dict) else result

    @strawberry.mutation(
        description="Import a source's full customer list from a CSV or JSON file: as an"
        " upload (`file`, a multipart request per the GraphQL multipart request spec, with"
        " the header `X-Fieldsync-CSRF` or `Apollo-Require-Preflight`) or as text"
        " (`content`). Applied whole or refused whole; the same file again changes nothing"
        " (admins only).",
        graphql_type=ImportResult,
    )
    async def import_external_records(
        self,
        info: Info,
        source_id: SourceId,
        file: Annotated[
            Upload | None, strawberry.argument(description="The file, as a multipart upload.")
        ] = None,
        content: Annotated[
            str | None, strawberry.argument(description="The file's text, instead of `file`.")
        ] = None,
        file_name: Annotated[
            str | None, strawberry.argument(description="Name to record (default: the upload's).")
        ] = None,
        format: Annotated[
            ImportFormat | None,
            strawberry.argument(description="CSV or JSON; default: from the name or content."),
        ] = None,
    ) -> ImportBatch | ImportRefused | UserError:
        """Hand the bytes to the import command."""
        caller = await _admin_and_source(info, source_id)
        if isinstance(caller, Forbidden | NotFound):
            return caller
        user, uuid = caller
        if (file is None) == (content is None):
            return invalid({"file": "give either `file` (an upload) or `content` (text)"})
        limit = info.context.settings.max_import_bytes
        if file is not None:
            # strawberry types an Upload as bytes; a multipart request hands over Starlette's
            # UploadFile (anything else came as a plain variable, not as a file).
            upload: object = file
            if not isinstance(upload, UploadFile):
                return invalid({"file": "send the file as a multipart upload"})
            # Read at most one byte past the limit.
            data = await upload.read(limit + 1)
            file_name = file_name or upload.filename
        else:
            assert content is not None
            data = content.encode()
        try:
            outcome = await window_imports.import_file(
                info.context.db,
                org_id=user.org_id,
                source_id=uuid,
                data=data,
                file_name=file_name,
                file_format=rules.ImportFormat(format.name) if format else None,
                actor=_actor(user),
                max_bytes=limit,
                max_length=info.context.settings.max_string_length,
            )
        except DomainError as exc:
            return error_from(exc, source_id)
        batch = ImportBatch.from_row(outcome.batch, already_imported=outcome.already_imported)
        if outcome.batch["status"] == "REFUSED":
            return ImportRefused.from_batch(batch)
        return batch

    @strawberry.mutation(
        description="Compare a source's pairs again against its last import (after local"
        " edits), applying one-sided changes per its direction; no file needed (admins only).",
        graphql_type=SyncRefreshPayload,
    )
    async def refresh_sync_window(
        self,
        info: Info,
        source_id: SourceId,
    ) -> SyncRefreshResult | UserError:
        """A sync run without a file."""
        caller = await _admin_and_source(info, source_id)
        if isinstance(caller, Forbidden | NotFound):
            return caller
        user, uuid = caller
        try:
            async with info.context.write() as conn:
                run = await window_runs.refresh(
                    conn, org_id=user.org_id, source_id=uuid, actor=_actor(user)
                )
        except DomainError as exc:
            return error_from(exc, source_id)
        return SyncRefreshResult(
            applied_to_local=run.applied, counts=category_counts(run.categories)
        )

    @strawberry.mutation(
        description="Pair new external records with chosen customers (admins only).",
        graphql_type=SyncActionPayload,
    )
    async def pair_external_records(
        self,
        info: Info,
        source_id: SourceId,
        pairs: Annotated[
            list[PairInput],
            strawberry.argument(
                description="The pairings to make; each is done or refused on its own."
            ),
        ],
    ) -> SyncActionResult | UserError:
        """Pair; a fresh pair whose values differ shows as a conflict."""
        refused: list[SyncItemRefusal] = []
        items: list[tuple[str, UUID]] = []
        for item in pairs:
            customer_id = _customer_uuid(item.customer_id)
            if customer_id is None:
                refused.append(
                    SyncItemRefusal(
                        external_id=item.external_id,
                        code="NOT_FOUND",
                        message=f"{item.customer_id!r} is not a Customer id",
                    )
                )
            else:
                items.append((item.external_id, customer_id))
        return await _action(info, source_id, window_actions.pair, refused=refused, items=items)

    @strawberry.mutation(
        description="Create customers from new external records and pair them (admins only).",
        graphql_type=SyncActionPayload,
    )
    async def create_customers_from_external(
        self,
        info: Info,
        source_id: SourceId,
        external_ids: Annotated[
            list[str],
            strawberry.argument(
                description="External ids of unpaired records to create customers from; each is"
                " done or refused on its own."
            ),
        ],
    ) -> SyncActionResult | UserError:
        """Create through the write path (devices receive them)."""
        return await _action(
            info,
            source_id,
            window_actions.create_customers,
            external_ids=external_ids,
            max_length=info.context.settings.max_string_length,
        )

    @strawberry.mutation(
        description="Settle conflicts: keep local or keep external, per pair or per field."
        " Keeping external writes the customer (devices receive it). Admins only.",
        graphql_type=SyncActionPayload,
    )
    async def resolve_external_conflicts(
        self,
        info: Info,
        source_id: SourceId,
        resolutions: Annotated[
            list[ConflictResolutionInput],
            strawberry.argument(
                description="One per CONFLICT pair; each is done or refused on its own."
            ),
        ],
    ) -> SyncActionResult | UserError:
        """Keep one side."""
        items: list[window_actions.Resolution] = []
        refused: list[SyncItemRefusal] = []
        for r in resolutions:
            unknown = [f for f in r.fields or [] if f not in rules.FIELDS]
            if unknown:
                refused.append(
                    SyncItemRefusal(
                        external_id=r.external_id,
                        code="NOT_A_CONFLICT",
                        message="not a synced field: " + ", ".join(unknown),
                    )
                )
                continue
            items.append(
                window_actions.Resolution(
                    external_id=r.external_id,
                    keep=rules.Side(r.keep.name),
                    fields=tuple(rules.FIELDS[f] for f in r.fields) if r.fields else None,
                )
            )
        return await _action(
            info, source_id, window_actions.resolve_conflicts, refused=refused, resolutions=items
        )

    @strawberry.mutation(
        description="Switch sync off (DEACTIVATED) or back on for pairs (`active: true`; admins"
        " only).",
        graphql_type=SyncActionPayload,
    )
    async def set_external_sync_active(
        self,
        info: Info,
        source_id: SourceId,
        external_ids: PairedIds,
        active: Annotated[
            bool,
            strawberry.argument(description="false: switch sync off (DEACTIVATED); true: back on."),
        ],
    ) -> SyncActionResult | UserError:
        """Deactivate or reactivate."""
        return await _action(
            info,
            source_id,
            window_actions.set_sync_active,
            external_ids=external_ids,
            active=active,
        )

    @strawberry.mutation(
        description="Undo pairs: records become NEW_EXTERNAL and customers NEW_LOCAL; later"
        " imports do not pair them again by email (admins only).",
        graphql_type=SyncActionPayload,
    )
    async def unlink_external_records(
        self,
        info: Info,
        source_id: SourceId,
        external_ids: PairedIds,
    ) -> SyncActionResult | UserError:
        """Unlink."""
        return await _action(info, source_id, window_actions.unlink, external_ids=external_ids)

    @strawberry.mutation(
        description="Settle DELETED pairs: a record gone externally is removed (its customer"
        " archived with `archiveLocal`); a record whose customer was deleted is unpaired"
        " (admins only).",
        graphql_type=SyncActionPayload,
    )
    async def remove_deleted_external_records(
        self,
        info: Info,
        source_id: SourceId,
        external_ids: Annotated[
            list[str],
            strawberry.argument(
                description="External ids of DELETED pairs; others are refused (NOT_DELETED)."
            ),
        ],
        archive_local: Annotated[
            bool,
            strawberry.argument(
                description="true: also archive the customer of a record gone externally; false"
                " (default): keep it as is."
            ),
        ] = False,
    ) -> SyncActionResult | UserError:
        """Remove after deletion."""
        return await _action(
            info,
            source_id,
            window_actions.remove_deleted,
            external_ids=external_ids,
            archive_local=archive_local,
        )
