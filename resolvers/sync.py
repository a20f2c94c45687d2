"""Sync operations: registerDevice, selectCustomers, pull, pushChanges, conflicts, state."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, TypeVar, cast
from uuid import UUID

import strawberry

from db.commands import sync as commands
from db.commands.sync import SyncState
from db.entities import EntityType
from db.errors import NotFoundError, RecordValidationError
from db.pull import PulledChange
from db.push import ChangeResult as StoredResult
from db.push import PushChange, push
from db.push import PushResult as StoredPush
from db.queries import devices as device_queries
from db.queries import orgs as org_queries
from db.queries.users import list_users
from resolvers.assets import asset_patch
from resolvers.contacts import contact_patch
from resolvers.context import CurrentUser, Info, PublicError, Role
from resolvers.customers import customer_patch
from resolvers.facilities import facility_patch
from resolvers.push_gc import fewer_young_collections
from resolvers.selection_json import shapes
from resolvers.selection_json.shapes import resolver_field_shape
from resolvers.writes import Action, run_write
from schema.encoding import typed_builder
from schema.errors import FIELD_CONFLICT, FieldConflict, UserError, error_from, not_found
from schema.node import InvalidIdError, from_global_id, to_global_id
from schema.preencoded import PreEncoded
from schema.scalars import JSON
from schema.sync import (
    CHANGE,
    CHANGE_RESULT,
    AutoSyncInterval,
    AutoSyncIntervalInput,
    Change,
    ChangeInput,
    ChangeOp,
    ChangeResult,
    ConflictPolicies,
    ConflictPolicy,
    ConflictResolution,
    ConflictResolver,
    DataTypeSync,
    Device,
    DeviceId,
    DeviceResult,
    DeviceSyncState,
    OfflineMode,
    PolicyResult,
    PullResult,
    PushChangesResult,
    PushResult,
    RegisterDeviceInput,
    ReportDeviceInput,
    ResolveConflictResult,
    SelectionMode,
    SyncConflict,
    SyncEntity,
    SyncStatus,
)
from sync import checkpoint as checkpoints
from sync.decision import Op
from sync.record_shape import LINKS
from sync.validation import camel

T = TypeVar("T")
# Portal users read their own customer; devices and sync are for the dealer's staff.
NO_PORTAL_DEVICES = "portal users may not register or sync devices"
MAX_PULL_LIMIT = 1000
MAX_PUSH_BATCH = 1000
MIN_AUTO_SYNC_SECONDS = 60
# Receipts are keyed by clientMutationId in a btree: a bounded key (uuids are 36).
MAX_CLIENT_MUTATION_ID_LENGTH = 255


def record_uuid(value: str, field: str) -> UUID:
    """A record id given as a uuid or as a global id."""
    try:
        return UUID(value)
    except ValueError:
        pass
    try:
        return from_global_id(value)[1]
    except InvalidIdError:
        raise RecordValidationError({field: f"is not a record id: {value!r}"}) from None


def _auto_sync(values: list[AutoSyncIntervalInput]) -> dict[str, int]:
    bad = [v.data_type.name for v in values if v.seconds < MIN_AUTO_SYNC_SECONDS]
    if bad:
        raise RecordValidationError(
            {"autoSync": f"intervals must be {MIN_AUTO_SYNC_SECONDS}s or more: {bad}"}
        )
    return {v.data_type.value: v.seconds for v in values}


def device_from(row: dict[str, Any], state: SyncState, selected: list[UUID], email: str) -> Device:
    """The Device type from its row and computed state."""
    return Device(
        id=to_global_id("Device", row["id"]),
        replica_id=row["replica_id"],
        name=row["name"],
        platform=row["platform"],
        app_version=row["app_version"],
        offline_mode=OfflineMode(row["offline_mode"]),
        auto_sync=[
            AutoSyncInterval(data_type=SyncEntity(k), seconds=v)
            for k, v in row["auto_sync"].items()
        ],
        selection_mode=SelectionMode(row["selection_mode"]),
        selected_customer_ids=[strawberry.ID(str(c)) for c in sorted(selected, key=str)],
        user_email=email,
        created_at=row["created_at"],
        sync_state=state_from(row["id"], state),
        resolves_conflicts=ConflictResolver(row["conflict_resolver"]),
    )


def state_from(device_id: UUID, state: SyncState) -> DeviceSyncState:
    """The GraphQL sync state of one device."""
    return DeviceSyncState(
        id=to_global_id("DeviceSyncState", device_id),
        device_id=to_global_id("Device", device_id),
        status=SyncStatus(state.status.value),
        checkpoint=None
        if state.checkpoint_seq is None
        else checkpoints.encode(checkpoints.Checkpoint(state.checkpoint_seq)),
        head_checkpoint=checkpoints.encode(checkpoints.Checkpoint(state.head_seq)),
        lag=max(0, state.head_seq - (state.checkpoint_seq or 0)),
        pending_changes=state.pending_changes,
        open_conflicts=state.open_conflicts,
        last_pull_at=state.last_pull_at,
        last_push_at=state.last_push_at,
        last_synced_at=[
            DataTypeSync(data_type=SyncEntity(k), at=datetime.fromisoformat(v))
            for k, v in state.last_synced.items()
        ],
    )


async def _staff_write(
    info: Info, action: Action[T], *, client_id: str | None = None
) -> T | UserError:
    """``run_write`` for the device and sync mutations: portal users have no devices."""
    return await run_write(
        info,
        action,
        client_id=client_id,
        allowed=lambda user: user.role is not Role.PORTAL,
        refusal=NO_PORTAL_DEVICES,
    )


async def _device_view(conn: Any, org_id: UUID, row: dict[str, Any], email: str) -> Device:
    [state] = await commands.sync_states(conn, org_id, [row])
    selected = await device_queries.selected_customer_ids(conn, org_id, row["id"])
    return device_from(row, state, selected, email)


async def device_node(info: Info, device_id: UUID) -> Device | None:
    """``node(id:)`` of a Device, under the rule of ``devices``: admins see every active
    device of the tenant, others their own; None otherwise."""
    user = await info.context.user()
    async with info.context.read() as conn:
        try:
            row = await commands.owned_device(
                conn, user.org_id, user.id, device_id, admin=user.is_admin
            )
        except NotFoundError:
            return None
        emails = await _emails(conn, user.org_id, {row["user_id"]})
        return await _device_view(conn, user.org_id, row, emails.get(row["user_id"], ""))


async def conflict_node(info: Info, conflict_id: UUID) -> SyncConflict | None:
    """``node(id:)`` of a SyncConflict, under the rule of ``conflicts``: admins see every
    conflict of the tenant, others their own, open or settled; None otherwise."""
    user = await info.context.user()
    async with info.context.read() as conn:
        rows = await commands.list_conflicts(
            conn,
            user.org_id,
            status_=None,
            device_id=None,
            user_id=None if user.is_admin else user.id,
            conflict_id=conflict_id,
        )
    return conflict_from(rows[0]) if rows else None


def conflict_from(row: dict[str, Any]) -> SyncConflict:
    """The SyncConflict type from its row."""
    return SyncConflict(
        id=to_global_id("SyncConflict", row["id"]),
        entity=SyncEntity(row["entity"]),
        record_id=strawberry.ID(str(row["record_id"])),
        customer_id=strawberry.ID(str(row["customer_id"])),
        device_id=to_global_id("Device", row["device_id"]) if row["device_id"] else None,
        op=ChangeOp(row["op"]),
        base_version=row["base_version"],
        server_version=row["server_version"],
        fields=[_field_conflict(c) for c in row["fields"]],
        client_patch=JSON({camel(k): v for k, v in row["client_patch"].items()}),
        status=row["status"],
        resolution=ConflictResolution(row["resolution"]) if row["resolution"] else None,
        created_at=row["created_at"],
        resolved_at=row["resolved_at"],
    )


# The typed path's objects are built from the encoders' specs, which sit next to their
# types: each conversion is stated once, and the two paths cannot disagree.
_change = typed_builder(CHANGE, Change)
_change_result = typed_builder(CHANGE_RESULT, ChangeResult)
_field_conflict = typed_builder(FIELD_CONFLICT, FieldConflict)


def change_from(change: PulledChange) -> Change:
    """The Change type of a pulled row (read as ``schema.sync.CHANGE`` says)."""
    return _change(change)


def result_from(stored: StoredResult) -> ChangeResult:
    """The GraphQL outcome of one pushed change (read as ``schema.sync.CHANGE_RESULT`` says)."""
    return _change_result(stored)


def to_push_change(change: ChangeInput) -> PushChange:
    """A typed ChangeInput in table terms; raises RecordValidationError on bad ids."""
    patch_input = change.patch
    given = {
        name: value
        for name, value in vars(patch_input).items()
        # By identity: `in` would call each patch object's __eq__ twice.
        if value is not None and value is not strawberry.UNSET
    }
    if len(given) != 1:
        raise RecordValidationError(
            {"patch": "give exactly one of customer, contact, facility, asset"}
        )
    [(name, value)] = given.items()
    entity = EntityType(name)
    links: dict[str, UUID] = {}
    if entity is EntityType.CUSTOMER:
        patch = customer_patch(value)
    elif entity is EntityType.CONTACT:
        patch = contact_patch(value)
    elif entity is EntityType.FACILITY:
        patch = facility_patch(value)
    else:
        patch = asset_patch(value)
    for link in LINKS:
        # Links are not fields: checked against the record's parents (db/push.py), never
        # written (records cannot move).
        patch.pop(link, None)
        raw = getattr(value, link, None)
        if raw:
            links[link] = record_uuid(raw, camel(link))
    return PushChange(
        client_mutation_id=change.client_mutation_id,
        entity=entity,
        record_id=record_uuid(change.record_id, "recordId"),
        op=Op(change.op.value),
        base_version=change.base_version,
        patch={} if change.op is ChangeOp.DELETE else patch,
        links=links,
        counter=change.counter,
        resolves_conflict_id=change.resolves_conflict_id,
        resolves_conflict=_conflict_uuid(change.resolves_conflict_id),
    )


def _conflict_uuid(value: str | None) -> UUID | None:
    """The conflict a change names (a SyncConflict global id or its uuid); None when it
    names none. A malformed id refuses only its change (db/push.py), not the push."""
    if value is None:
        return None
    try:
        return UUID(value)
    except ValueError:
        pass
    try:
        return from_global_id(value, "SyncConflict")[1]
    except InvalidIdError:
        return None


def _device_id(value: str) -> UUID:
    try:
        return record_uuid(value, "deviceId")
    except RecordValidationError:
        raise PublicError(f"{value!r} is not a device id", "BAD_USER_INPUT") from None


def _may_select(user: CurrentUser) -> bool:
    return user.is_admin or "can_sync_by_customer" in user.capabilities


def feed_types(types: Sequence[SyncEntity] | None) -> frozenset[EntityType]:
    """The record types of a feed filter (None: all); an empty filter is refused."""
    if types is None:
        return frozenset(EntityType)
    if not types:
        raise PublicError(
            "`types` must name at least one record type (omit it, or pass null, for all)",
            "BAD_USER_INPUT",
        )
    return frozenset(EntityType(t.value) for t in types)


def feed_position(since: str | None, types: frozenset[EntityType]) -> checkpoints.Checkpoint:
    """``since`` decoded as a checkpoint of the feed of ``types`` (None: its beginning)."""
    try:
        return checkpoints.decode(
            since, commands.feed_name(types), known=[t.value for t in EntityType]
        )
    except checkpoints.InvalidCheckpointError as exc:
        raise PublicError(str(exc), "BAD_USER_INPUT") from None


TYPES_DOC = (
    "The record types of this feed; null or omitted: all. A device may run one feed per type"
    " at once; each feed's checkpoints are valid for its types only."
)


@strawberry.type
class SyncQueries:
    """Sync reads."""

    @strawberry.field(
        description="A page of one feed: the changes of `types` for a device's customers"
        " after `since`."
    )
    async def pull(
        self,
        info: Info,
        device_id: DeviceId,
        since: Annotated[
            str | None,
            strawberry.argument(
                description="The `checkpoint` of the last page of this feed you applied;"
                " null or omitted: from the beginning."
            ),
        ] = None,
        limit: Annotated[
            int, strawberry.argument(description="Changes per page, 1 to 1,000.")
        ] = 500,
        types: Annotated[
            list[SyncEntity] | None, strawberry.argument(description=TYPES_DOC)
        ] = None,
    ) -> PullResult:
        """Pull a page; call again with `checkpoint` while `hasMore`."""
        if not 1 <= limit <= MAX_PULL_LIMIT:
            raise PublicError(f"`limit` must be between 1 and {MAX_PULL_LIMIT}", "BAD_USER_INPUT")
        feed = feed_types(types)
        position = feed_position(since, feed)
        device_uuid = _device_id(device_id)
        try:
            async with info.context.caller_write() as (conn, user):
                page = await commands.pull(
                    conn,
                    org_id=user.org_id,
                    user_id=user.id,
                    device_id=device_uuid,
                    may_select=_may_select(user),
                    since=position,
                    limit=limit,
                    types=feed,
                )
        except NotFoundError:
            raise PublicError("no such device of yours: register it first", "NOT_FOUND") from None
        except RecordValidationError as exc:
            raise PublicError(str(exc), "BAD_USER_INPUT") from None
        # Encode the page once in the client's selection when it reduces to one shape; a
        # PreEncoded value skips graphql-core's per-field completion (schema/preencoded.py).
        shape = resolver_field_shape(info, CHANGE, "PullResult", "changes")
        changes = (
            cast("list[Change]", PreEncoded(shapes.encode(CHANGE, shape, page.changes)))
            if shape is not None
            else [change_from(c) for c in page.changes]
        )
        return PullResult(
            changes=changes,
            checkpoint=checkpoints.encode(page.checkpoint),
            has_more=page.has_more,
            reset=page.reset,
        )

    @strawberry.field(description="One device's sync state (its owner, or an admin).")
    async def sync_state(
        self,
        info: Info,
        device_id: Annotated[
            strawberry.ID, strawberry.argument(description="The device's `id` (global id or uuid).")
        ],
    ) -> DeviceSyncState:
        """Sync state."""
        user = await info.context.user()
        async with info.context.read() as conn:
            try:
                device = await commands.owned_device(
                    conn, user.org_id, user.id, _device_id(device_id), admin=user.is_admin
                )
            except NotFoundError:
                raise PublicError("no such device", "NOT_FOUND") from None
            [state] = await commands.sync_states(conn, user.org_id, [device])
        return state_from(device["id"], state)

    @strawberry.field(
        description="Devices with their sync state: admins see all, others their own."
    )
    async def devices(
        self,
        info: Info,
        status: Annotated[
            SyncStatus | None,
            strawberry.argument(
                description="Only devices in this sync state; omitted: every state."
            ),
        ] = None,
    ) -> list[Device]:
        """Device overview; filter by status to find silent failures."""
        user = await info.context.user()
        async with info.context.read() as conn:
            rows = await device_queries.list_devices(
                conn, user.org_id, user_id=None if user.is_admin else user.id
            )
            states = await commands.sync_states(conn, user.org_id, rows)
            emails = await _emails(conn, user.org_id, {r["user_id"] for r in rows})
            selected = await device_queries.selections(conn, user.org_id, [r["id"] for r in rows])
            result = []
            for row, state in zip(rows, states, strict=True):
                if status is not None and state.status.value != status.value:
                    continue
                result.append(
                    device_from(row, state, selected[row["id"]], emails.get(row["user_id"], ""))
                )
        return result

    @strawberry.field(description="Sync conflicts: your own, or all for admins.")
    async def conflicts(
        self,
        info: Info,
        open_only: Annotated[
            bool,
            strawberry.argument(
                description="true (default): only unsettled conflicts; false: settled ones too."
            ),
        ] = True,
        device_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(
                description="Only this device's conflicts (its `id`, global id or uuid); omitted:"
                " every device's you may see."
            ),
        ] = None,
    ) -> list[SyncConflict]:
        """Conflict inbox."""
        user = await info.context.user()
        async with info.context.read() as conn:
            rows = await commands.list_conflicts(
                conn,
                user.org_id,
                status_="OPEN" if open_only else None,
                device_id=_device_id(device_id) if device_id else None,
                user_id=None if user.is_admin else user.id,
            )
        return [conflict_from(r) for r in rows]

    @strawberry.field(description="The tenant's conflict policy per record type.")
    async def conflict_policies(self, info: Info) -> ConflictPolicies:
        """Policies (MANUAL unless an admin set another)."""
        user = await info.context.user()
        async with info.context.read() as conn:
            policies = await org_queries.conflict_policies(conn, user.org_id)
        return _policies_from({t.value: p.value for t, p in policies.items()})


def _policies_from(values: dict[str, str]) -> ConflictPolicies:
    return ConflictPolicies(
        **{t.value: ConflictPolicy(values.get(t.value, "MANUAL")) for t in EntityType}
    )


async def _emails(conn: Any, org_id: UUID, user_ids: set[UUID]) -> dict[UUID, str]:
    return {u["id"]: u["email"] for u in await list_users(conn, org_id) if u["id"] in user_ids}


def _reject_nul(**fields: str) -> None:
    """PostgreSQL text cannot hold NUL: refuse it as a validation error, not a crash."""
    errors = {name: "must not contain NUL characters" for name, v in fields.items() if "\x00" in v}
    if errors:
        raise RecordValidationError(errors)


def _bad_client_mutation_ids(changes: list[PushChange]) -> dict[str, str]:
    """Errors for ids a receipt cannot be stored under (empty, too long, NUL)."""
    errors: dict[str, str] = {}
    for index, change in enumerate(changes):
        value = change.client_mutation_id
        if not 1 <= len(value) <= MAX_CLIENT_MUTATION_ID_LENGTH:
            errors[f"changes[{index}].clientMutationId"] = (
                f"must be 1 to {MAX_CLIENT_MUTATION_ID_LENGTH} characters"
            )
        elif "\x00" in value:
            errors[f"changes[{index}].clientMutationId"] = "must not contain NUL characters"
    return errors


@strawberry.type
class SyncMutations:
    """Sync writes."""

    @strawberry.mutation(
        description="Register this app install; returns a fresh replica id.",
        graphql_type=DeviceResult,
    )
    async def register_device(
        self,
        info: Info,
        input: Annotated[
            RegisterDeviceInput,
            strawberry.argument(description="What the app says about this install."),
        ],
    ) -> Device | UserError:
        """New device (syncs ALL customers until it selects some)."""

        async def action(conn: Any, user: CurrentUser) -> Device:
            _reject_nul(name=input.name, platform=input.platform, appVersion=input.app_version)
            row = await device_queries.register(
                conn,
                org_id=user.org_id,
                user_id=user.id,
                values={
                    "name": input.name[:200],
                    "platform": input.platform[:100],
                    "app_version": input.app_version[:50],
                    "offline_mode": input.offline_mode.value,
                    "auto_sync": _auto_sync(input.auto_sync),
                    "conflict_resolver": input.resolves_conflicts.value,
                },
            )
            return await _device_view(conn, user.org_id, row, user.email)

        return await _staff_write(info, action)

    @strawberry.mutation(
        description="Report offline mode, auto-sync intervals and outbox size.",
        graphql_type=DeviceResult,
    )
    async def report_device(
        self,
        info: Info,
        device_id: DeviceId,
        input: Annotated[
            ReportDeviceInput,
            strawberry.argument(description="What changed; omitted fields keep their values."),
        ],
    ) -> Device | UserError:
        """Update what the phone says about itself."""

        async def action(conn: Any, user: CurrentUser) -> Device:
            device = await commands.owned_device(
                conn, user.org_id, user.id, record_uuid(device_id, "deviceId")
            )
            values: dict[str, Any] = {}
            if input.offline_mode not in (None, strawberry.UNSET):
                values["offline_mode"] = input.offline_mode.value
            if input.auto_sync not in (None, strawberry.UNSET):
                values["auto_sync"] = _auto_sync(input.auto_sync)
            if input.pending_changes not in (None, strawberry.UNSET):
                if input.pending_changes < 0:
                    raise RecordValidationError({"pendingChanges": "must be 0 or more"})
                values["pending_changes"] = input.pending_changes
            if input.app_version not in (None, strawberry.UNSET):
                _reject_nul(appVersion=str(input.app_version))
                values["app_version"] = str(input.app_version)[:50]
            if input.resolves_conflicts not in (None, strawberry.UNSET):
                # Decides the device's next pushes; conflicts already stored stay open.
                values["conflict_resolver"] = input.resolves_conflicts.value
            row = (
                await device_queries.update_device(conn, user.org_id, device["id"], values)
                if values
                else device
            )
            return await _device_view(conn, user.org_id, row, user.email)

        return await _staff_write(info, action, client_id=device_id)

    @strawberry.mutation(
        description="Choose the customers a device syncs (needs 'sync by customer');"
        " ALL syncs every customer.",
        graphql_type=DeviceResult,
    )
    async def select_customers(
        self,
        info: Info,
        device_id: Annotated[
            strawberry.ID,
            strawberry.argument(description="Your device's `id` (global id or uuid)."),
        ],
        mode: Annotated[
            SelectionMode,
            strawberry.argument(
                description="ALL: every customer; SELECTED: exactly `customerIds`."
            ),
        ],
        customer_ids: Annotated[
            list[strawberry.ID] | None,
            strawberry.argument(
                description="SELECTED: the customers to sync (global ids or uuids), replacing the"
                " previous choice; ignored for ALL."
            ),
        ] = None,
    ) -> Device | UserError:
        """Change the selection; unselecting removes nothing on the server."""

        async def action(conn: Any, user: CurrentUser) -> Device:
            device = await commands.owned_device(
                conn, user.org_id, user.id, record_uuid(device_id, "deviceId"), lock=True
            )
            ids = [record_uuid(c, "customerIds") for c in customer_ids or []]
            row = await commands.select_customers(
                conn,
                org_id=user.org_id,
                device=device,
                may_select=_may_select(user),
                mode=mode.value,
                customer_ids=ids,
            )
            return await _device_view(conn, user.org_id, row, user.email)

        return await _staff_write(info, action, client_id=device_id)

    @strawberry.mutation(
        description="Push offline changes; each gets its own outcome, with the record as it now"
        " stands.",
        graphql_type=PushChangesResult,
    )
    async def push_changes(
        self,
        info: Info,
        device_id: DeviceId,
        changes: Annotated[
            list[ChangeInput],
            strawberry.argument(
                description="The outbox, at most 1,000 changes, each answered in this order."
            ),
        ],
    ) -> PushResult | UserError:
        """Apply a batch (at most 1,000 changes); replays are idempotent."""
        if len(changes) > MAX_PUSH_BATCH:
            return error_from(
                RecordValidationError(
                    {
                        "changes": f"at most {MAX_PUSH_BATCH} changes per push;"
                        f" got {len(changes)}: split the batch"
                    }
                )
            )
        # A thousand changes allocate enough to set off fifty young collections, each over
        # the push's own live objects: fewer while it runs (resolvers/push_gc.py).
        with fewer_young_collections():
            try:
                converted = [to_push_change(c) for c in changes]
            except RecordValidationError as exc:
                return error_from(exc)
            bad_ids = _bad_client_mutation_ids(converted)
            if bad_ids:
                return error_from(RecordValidationError(bad_ids))
            if len({c.client_mutation_id for c in converted}) != len(converted):
                return error_from(
                    RecordValidationError(
                        {"changes": "clientMutationId values must be unique within a push"}
                    )
                )

            # A thousand outcomes: encoded once in the client's selection (as for pull), which
            # also says whether the records are wanted (the typed path may always want them).
            shape = resolver_field_shape(info, CHANGE_RESULT, "PushResult", "results")
            with_records = shape is None or any(name == "record" for _, name, _ in shape)

            async def action(conn: Any, user: CurrentUser) -> StoredPush:
                device = await commands.owned_device(
                    conn, user.org_id, user.id, record_uuid(device_id, "deviceId"), lock=True
                )
                return await push(
                    conn,
                    org_id=user.org_id,
                    device=device,
                    user_can_write=user.can_edit_records,
                    changes=converted,
                    max_length=info.context.settings.max_string_length,
                    with_records=with_records,
                    # Made while the push's last statement runs (db/push.py: _finish).
                    answer=answer,
                )

            def answer(results: Sequence[StoredResult]) -> list[ChangeResult]:
                if shape is None:
                    return [result_from(r) for r in results]
                return cast(
                    "list[ChangeResult]", PreEncoded(shapes.encode(CHANGE_RESULT, shape, results))
                )

            outcome = await _staff_write(info, action, client_id=device_id)
            if isinstance(outcome, UserError):
                return outcome
            info.context.count_push_outcomes([str(r.outcome) for r in outcome.results])
            return PushResult(
                results=cast("list[ChangeResult]", outcome.answered),
                reregister_required=outcome.reregister_required,
            )

    @strawberry.mutation(
        description="Settle a conflict: keep the server's values, the device's, or merge.",
        graphql_type=ResolveConflictResult,
    )
    async def resolve_conflict(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The SyncConflict's id.")],
        resolution: Annotated[
            ConflictResolution, strawberry.argument(description="How to settle it.")
        ],
        values: Annotated[
            strawberry.scalars.JSON | None,
            strawberry.argument(
                description="MERGE: a value per conflicting field (names as in `data`);"
                " the device's value for the others."
            ),
        ] = None,
    ) -> SyncConflict | UserError:
        """Resolve; the result is a new versioned write that reaches every device."""
        try:
            conflict_id = from_global_id(id, "SyncConflict")[1]
        except InvalidIdError as exc:
            return not_found(id, str(exc))
        columns = None
        if values is not None:
            if not isinstance(values, dict):
                return error_from(
                    RecordValidationError({"values": "must be an object of field: value"})
                )
            columns = {_column(k): v for k, v in values.items()}

        async def action(conn: Any, user: CurrentUser) -> Any:
            return await commands.resolve_conflict(
                conn,
                org_id=user.org_id,
                user_id=user.id,
                is_admin=user.is_admin,
                conflict_id=conflict_id,
                resolution=resolution.value,
                values=columns,
                max_length=info.context.settings.max_string_length,
            )

        result = await run_write(info, action, client_id=id)
        return conflict_from(result) if isinstance(result, dict) else result

    @strawberry.mutation(
        description="Set the conflict policy of one record type (admins only).",
        graphql_type=PolicyResult,
    )
    async def set_conflict_policy(
        self,
        info: Info,
        entity: Annotated[
            SyncEntity, strawberry.argument(description="The record type whose policy to set.")
        ],
        policy: Annotated[
            ConflictPolicy,
            strawberry.argument(description="How its conflicting pushes are settled from now on."),
        ],
    ) -> ConflictPolicies | UserError:
        """Policy per record type."""

        async def action(conn: Any, user: CurrentUser) -> Any:
            return await commands.set_conflict_policy(
                conn, user.org_id, EntityType(entity.value), policy.value
            )

        result = await run_write(
            info,
            action,
            allowed=lambda u: u.is_admin,
            refusal="only admins may set conflict policies",
        )
        return _policies_from(result) if isinstance(result, dict) else result


def _column(api_name: str) -> str:
    return "".join("_" + ch.lower() if ch.isupper() else ch for ch in api_name)
