"""decide(): the outcome of one incoming change against the server's copy."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.decision import (
    ConflictPolicy,
    ConflictResolver,
    Decision,
    FieldConflict,
    IncomingChange,
    Op,
    Outcome,
    ServerRecord,
    decide,
    seen_base,
)
from sync.field_dots import changed_since
from sync.version_vector import Ordering, compare, dominates_or_equal
from tests.sync.strategies import (
    PROPERTY,
    Scenario,
    policies,
    realistic_scenarios,
    scenarios,
)

Validator = Callable[[Mapping[str, object]], Mapping[str, str]]

# History of SERVER: replica "s" created the record (s:1), device "d" edited the phone
# (d:1), then "s" edited the email (s:2). BASE is what a device saw before that last edit.
SERVER = ServerRecord(
    values={"name": "Acme", "email": "new@x.test", "phone": "555"},
    version={"s": 2, "d": 1},
    dots={"name": ("s", 1), "email": ("s", 2), "phone": ("d", 1)},
    deleted=False,
)
BASE = {"s": 1, "d": 1}
TOMBSTONE = ServerRecord(values={}, version={"s": 3, "d": 1}, dots={}, deleted=True)


def upsert(patch: Mapping[str, object], base: Mapping[str, int] | None = BASE) -> IncomingChange:
    """A device upsert from ``base``."""
    return IncomingChange(Op.UPSERT, base, patch, "d")


def delete(base: Mapping[str, int] | None = BASE) -> IncomingChange:
    """A device delete from ``base``."""
    return IncomingChange(Op.DELETE, base, {}, "d")


def name_required(values: Mapping[str, object]) -> Mapping[str, str]:
    """A validator: ``name`` must be a non-empty string."""
    return {} if values.get("name") else {"name": "required"}


def reject_everything(values: Mapping[str, object]) -> Mapping[str, str]:
    """A validator that fails any record."""
    return {"name": "always wrong"}


def reject_email_y(values: Mapping[str, object]) -> Mapping[str, str]:
    """A validator over the generated alphabet: email "y" is invalid."""
    return {"email": "not y"} if values.get("email") == "y" else {}


def seen(change: IncomingChange, server: ServerRecord) -> dict[str, int]:
    """What the change's author has seen of the record: its base, and for a device its own
    writes too."""
    base = dict(change.base_version or {})
    return seen_base(base, server, change.replica) if change.sees_own_writes else base


def writes(decision: Decision) -> bool:
    """True when the decision writes anything."""
    return bool(decision.apply) or decision.delete


class TestCreate:
    """Changes to a record the server does not have."""

    def test_create_applies_patch(self) -> None:
        """An upsert without a base creates the record from the patch."""
        decision = decide(None, upsert({"name": "New"}, None), ConflictPolicy.MANUAL)
        assert decision.outcome is Outcome.APPLIED
        assert decision.apply == {"name": "New"}
        assert not decision.delete

    def test_create_validates_patch(self) -> None:
        """A create whose values fail validation is VALIDATION_FAILED and writes nothing."""
        decision = decide(None, upsert({"name": ""}, None), ConflictPolicy.MANUAL, name_required)
        assert decision.outcome is Outcome.VALIDATION_FAILED
        assert decision.field_errors == {"name": "required"}
        assert decision.apply == {}

    def test_empty_create_is_still_validated(self) -> None:
        """A create always writes a record, so even an empty patch is validated."""
        decision = decide(None, upsert({}, None), ConflictPolicy.MANUAL, name_required)
        assert decision.outcome is Outcome.VALIDATION_FAILED

    def test_empty_base_is_a_create(self) -> None:
        """A base of ``{}`` (or only zeros) means the client saw nothing: still a create."""
        decision = decide(None, upsert({"name": "N"}, {"d": 0}), ConflictPolicy.MANUAL)
        assert decision.outcome is Outcome.APPLIED

    def test_unknown_record_with_base_is_deleted(self) -> None:
        """An edit of a record the server has no trace of (compacted) is DELETED."""
        decision = decide(None, upsert({"name": "X"}), ConflictPolicy.CLIENT_WINS)
        assert decision.outcome is Outcome.DELETED
        assert not writes(decision)
        assert decision.message

    def test_delete_of_unknown_record_is_deleted(self) -> None:
        """Deleting a record the server never had writes nothing and reports DELETED."""
        decision = decide(None, delete(None), ConflictPolicy.MANUAL)
        assert decision.outcome is Outcome.DELETED
        assert not writes(decision)


class TestBaseFromTheFuture:
    """A base version the server's version does not dominate."""

    @pytest.mark.parametrize("base", [{"s": 3, "d": 1}, {"s": 2, "d": 1, "x": 1}, {"d": 2}])
    def test_rejected(self, base: dict[str, int]) -> None:
        """A base claiming writes the server never had is VALIDATION_FAILED on baseVersion."""
        decision = decide(SERVER, upsert({"name": "X"}, base), ConflictPolicy.CLIENT_WINS)
        assert decision.outcome is Outcome.VALIDATION_FAILED
        assert set(decision.field_errors) == {"baseVersion"}
        assert not writes(decision)

    def test_rejected_before_tombstone(self) -> None:
        """An impossible base is reported even when the record is a tombstone."""
        decision = decide(TOMBSTONE, delete({"s": 9}), ConflictPolicy.MANUAL)
        assert decision.outcome is Outcome.VALIDATION_FAILED


class TestTombstone:
    """Changes to a record deleted on the server."""

    @pytest.mark.parametrize("change", [upsert({"name": "X"}), delete(), upsert({}, None)])
    @pytest.mark.parametrize("policy", list(ConflictPolicy))
    def test_deleted(self, change: IncomingChange, policy: ConflictPolicy) -> None:
        """Any change to a tombstone is DELETED and writes nothing."""
        decision = decide(TOMBSTONE, change, policy)
        assert decision.outcome is Outcome.DELETED
        assert not writes(decision)


class TestDelete:
    """DELETE of a live record."""

    def test_up_to_date(self) -> None:
        """A delete from the current version is APPLIED as a tombstone."""
        decision = decide(SERVER, delete(SERVER.version), ConflictPolicy.MANUAL)
        assert decision.outcome is Outcome.APPLIED
        assert decision.delete
        assert decision.apply == {}
        assert decision.conflicts == ()

    def test_without_base(self) -> None:
        """A delete without a base (an online delete) is APPLIED."""
        decision = decide(SERVER, delete(None), ConflictPolicy.MANUAL)
        assert decision.outcome is Outcome.APPLIED
        assert decision.delete

    def test_no_field_changed_since_base(self) -> None:
        """A version that moved without uncovering a field dot does not block the delete."""
        server = ServerRecord({"name": "A"}, {"s": 2}, {"name": ("s", 1)}, deleted=False)
        decision = decide(server, delete({"s": 1}), ConflictPolicy.MANUAL)
        assert decision.outcome is Outcome.APPLIED
        assert decision.delete

    def test_manual_conflict(self) -> None:
        """Under MANUAL, a delete after server edits is a CONFLICT listing those edits."""
        decision = decide(SERVER, delete(), ConflictPolicy.MANUAL)
        assert decision.outcome is Outcome.CONFLICT
        assert not writes(decision)
        assert decision.conflicts == (FieldConflict("email", "new@x.test", None),)

    def test_server_wins(self) -> None:
        """Under SERVER_WINS, the record is kept: a CONFLICT that writes nothing."""
        decision = decide(SERVER, delete(), ConflictPolicy.SERVER_WINS)
        assert decision.outcome is Outcome.CONFLICT
        assert not writes(decision)
        assert [c.field for c in decision.conflicts] == ["email"]

    def test_client_wins(self) -> None:
        """Under CLIENT_WINS, the delete is APPLIED and the discarded edits reported."""
        decision = decide(SERVER, delete(), ConflictPolicy.CLIENT_WINS)
        assert decision.outcome is Outcome.APPLIED
        assert decision.delete
        assert [c.field for c in decision.conflicts] == ["email"]

    def test_not_validated(self) -> None:
        """A delete writes a tombstone, which is never validated."""
        decision = decide(SERVER, delete(SERVER.version), ConflictPolicy.MANUAL, reject_everything)
        assert decision.outcome is Outcome.APPLIED


class TestLastWriterWins:
    """Online edits without a base version."""

    def test_overwrites(self) -> None:
        """The patch is applied even over fields the server changed."""
        change = IncomingChange(Op.UPSERT, None, {"email": "mine@x.test"}, "s", True)
        decision = decide(SERVER, change, ConflictPolicy.MANUAL)
        assert decision.outcome is Outcome.APPLIED
        assert decision.apply == {"email": "mine@x.test"}
        assert decision.conflicts == ()

    def test_validated_on_merged_values(self) -> None:
        """Validation sees the server's values with the patch on top."""
        change = IncomingChange(Op.UPSERT, None, {"name": ""}, "s", True)
        decision = decide(SERVER, change, ConflictPolicy.MANUAL, name_required)
        assert decision.outcome is Outcome.VALIDATION_FAILED
        assert decision.field_errors == {"name": "required"}


class TestUpToDate:
    """Upserts from the server's current version."""

    def test_applied(self) -> None:
        """An edit from the current version is APPLIED with the patch."""
        decision = decide(
            SERVER, upsert({"email": "e@x.test"}, SERVER.version), ConflictPolicy.MANUAL
        )
        assert decision.outcome is Outcome.APPLIED
        assert decision.apply == {"email": "e@x.test"}

    def test_validated_on_merged_values(self) -> None:
        """A field made required later fails even when the patch does not touch it."""
        server = ServerRecord({"name": None}, {"s": 1}, {"name": ("s", 1)}, deleted=False)
        decision = decide(
            server, upsert({"phone": "1"}, {"s": 1}), ConflictPolicy.MANUAL, name_required
        )
        assert decision.outcome is Outcome.VALIDATION_FAILED
        assert decision.apply == {}

    def test_valid_merged_values(self) -> None:
        """The server's values count towards validity."""
        decision = decide(
            SERVER, upsert({"phone": "1"}, SERVER.version), ConflictPolicy.MANUAL, name_required
        )
        assert decision.outcome is Outcome.APPLIED


class TestServerMovedOn:
    """Upserts from a base older than the server's version."""

    def test_merged_when_disjoint(self) -> None:
        """Editing fields the server did not change since base is MERGED with the patch."""
        decision = decide(SERVER, upsert({"phone": "777", "name": "B"}), ConflictPolicy.MANUAL)
        assert decision.outcome is Outcome.MERGED
        assert decision.apply == {"phone": "777", "name": "B"}
        assert decision.conflicts == ()

    def test_same_value_is_not_a_conflict(self) -> None:
        """Both sides setting the same value agree: MERGED."""
        decision = decide(SERVER, upsert({"email": "new@x.test"}), ConflictPolicy.MANUAL)
        assert decision.outcome is Outcome.MERGED
        assert decision.conflicts == ()

    def test_manual_conflict(self) -> None:
        """Under MANUAL, a field changed on both sides is held in a CONFLICT; the device's
        other fields are written now."""
        patch = {"email": "mine@x.test", "phone": "777"}
        decision = decide(SERVER, upsert(patch), ConflictPolicy.MANUAL)
        assert decision.outcome is Outcome.CONFLICT
        assert decision.apply == {"phone": "777"}
        assert not decision.delete
        assert decision.conflicts == (FieldConflict("email", "new@x.test", "mine@x.test"),)
        assert decision.message

    def test_manual_conflict_with_an_invalid_rest_is_refused(self) -> None:
        """The fields written at once are validated like any write: invalid -> refused."""
        patch = {"email": "mine@x.test", "name": None}
        decision = decide(SERVER, upsert(patch), ConflictPolicy.MANUAL, name_required)
        assert decision.outcome is Outcome.VALIDATION_FAILED

    def test_server_wins(self) -> None:
        """Under SERVER_WINS, the conflicting field is dropped and the rest MERGED."""
        patch = {"email": "mine@x.test", "phone": "777"}
        decision = decide(SERVER, upsert(patch), ConflictPolicy.SERVER_WINS)
        assert decision.outcome is Outcome.MERGED
        assert decision.apply == {"phone": "777"}
        assert [c.field for c in decision.conflicts] == ["email"]

    def test_server_wins_writing_nothing_skips_validation(self) -> None:
        """When the server wins every field, nothing is written and nothing is validated."""
        decision = decide(
            SERVER, upsert({"email": "mine@x.test"}), ConflictPolicy.SERVER_WINS, reject_everything
        )
        assert decision.outcome is Outcome.MERGED
        assert decision.apply == {}

    def test_client_wins(self) -> None:
        """Under CLIENT_WINS, the whole patch is MERGED and the overridden field reported."""
        patch = {"email": "mine@x.test", "phone": "777"}
        decision = decide(SERVER, upsert(patch), ConflictPolicy.CLIENT_WINS)
        assert decision.outcome is Outcome.MERGED
        assert decision.apply == patch
        assert decision.conflicts == (FieldConflict("email", "new@x.test", "mine@x.test"),)

    def test_merge_validated(self) -> None:
        """A merge whose result is invalid is VALIDATION_FAILED and writes nothing."""
        decision = decide(SERVER, upsert({"name": ""}), ConflictPolicy.MANUAL, name_required)
        assert decision.outcome is Outcome.VALIDATION_FAILED
        assert decision.apply == {}

    def test_retried_create_with_same_values(self) -> None:
        """A device create without base on an existing record with equal values MERGES."""
        decision = decide(SERVER, upsert(dict(SERVER.values), None), ConflictPolicy.MANUAL)
        assert decision.outcome is Outcome.MERGED

    def test_create_over_existing_record_conflicts(self) -> None:
        """A device create without base that disagrees with the server is a CONFLICT."""
        decision = decide(SERVER, upsert({"name": "Other"}, None), ConflictPolicy.MANUAL)
        assert decision.outcome is Outcome.CONFLICT
        assert [c.field for c in decision.conflicts] == ["name"]


validators = st.sampled_from([None, reject_email_y])


class TestProperties:
    """Invariants over generated records and changes."""

    @PROPERTY
    @given(scenarios, policies, validators)
    def test_conflict_never_writes_a_conflicting_field(
        self, scenario: Scenario, policy: ConflictPolicy, validate: Validator | None
    ) -> None:
        """A CONFLICT never deletes nor writes a field in conflict; under MANUAL it writes
        every other field of the patch (nothing of the edit is held back without cause)."""
        decision = decide(scenario.server, scenario.change, policy, validate)
        if decision.outcome is Outcome.CONFLICT:
            held = {c.field for c in decision.conflicts}
            assert decision.conflicts
            assert not decision.delete
            assert not held & decision.apply.keys()
            if policy is ConflictPolicy.MANUAL and scenario.change.op is Op.UPSERT:
                rest = {k: v for k, v in scenario.change.patch.items() if k not in held}
                assert decision.apply == rest

    @PROPERTY
    @given(scenarios, policies, validators)
    def test_apply_is_part_of_patch(
        self, scenario: Scenario, policy: ConflictPolicy, validate: Validator | None
    ) -> None:
        """Only patch fields with the patch's values are ever written."""
        decision = decide(scenario.server, scenario.change, policy, validate)
        for name, value in decision.apply.items():
            assert scenario.change.patch[name] == value
        if decision.delete:
            assert scenario.change.op is Op.DELETE
            assert decision.apply == {}

    @PROPERTY
    @given(scenarios, policies, validators)
    def test_outcome_shape(
        self, scenario: Scenario, policy: ConflictPolicy, validate: Validator | None
    ) -> None:
        """Errors come only with VALIDATION_FAILED, never FORBIDDEN, always a message."""
        decision = decide(scenario.server, scenario.change, policy, validate)
        assert decision.outcome is not Outcome.FORBIDDEN
        assert decision.message
        if decision.outcome is Outcome.VALIDATION_FAILED:
            assert decision.field_errors
            assert not writes(decision)
        else:
            assert decision.field_errors == {}
        if decision.outcome is Outcome.DELETED:
            assert not writes(decision)
        if policy is ConflictPolicy.MANUAL and decision.conflicts:
            assert decision.outcome is Outcome.CONFLICT

    @PROPERTY
    @given(scenarios, policies, validators)
    def test_deterministic(
        self, scenario: Scenario, policy: ConflictPolicy, validate: Validator | None
    ) -> None:
        """Replaying the same decide gives the same decision and leaves the inputs unchanged."""
        before = copy.deepcopy(scenario)
        first = decide(scenario.server, scenario.change, policy, validate)
        second = decide(scenario.server, scenario.change, policy, validate)
        assert first == second
        assert scenario == before

    @PROPERTY
    @given(scenarios, policies)
    def test_written_values_are_valid(self, scenario: Scenario, policy: ConflictPolicy) -> None:
        """Whatever is written passes validation on the merged record."""
        decision = decide(scenario.server, scenario.change, policy, reject_email_y)
        if decision.apply:
            current = scenario.server.values if scenario.server else {}
            assert reject_email_y({**current, **decision.apply}) == {}

    @PROPERTY
    @given(scenarios, policies)
    def test_future_base_rejected(self, scenario: Scenario, policy: ConflictPolicy) -> None:
        """A base the server's version does not dominate never writes."""
        server, base = scenario.server, scenario.change.base_version
        decision = decide(server, scenario.change, policy)
        if server is not None and base is not None and not dominates_or_equal(server.version, base):
            assert decision.outcome is Outcome.VALIDATION_FAILED
            assert "baseVersion" in decision.field_errors

    @PROPERTY
    @given(realistic_scenarios(), validators)
    def test_manual_never_writes_over_server_change(
        self, scenario: Scenario, validate: Validator | None
    ) -> None:
        """Under MANUAL, a field both sides set to different values since base is never written."""
        server, change = scenario.server, scenario.change
        decision = decide(server, change, ConflictPolicy.MANUAL, validate)
        if server is None:
            return
        server_changed = changed_since(server.dots, seen(change, server))
        both = {
            name
            for name in server_changed & change.patch.keys()
            if server.values.get(name) != change.patch[name]
        }
        assert not both & decision.apply.keys()
        if decision.outcome in {Outcome.APPLIED, Outcome.MERGED}:
            for name, value in decision.apply.items():
                assert name not in server_changed or server.values.get(name) == value

    @PROPERTY
    @given(realistic_scenarios(), policies)
    def test_policies_settle_conflicts(self, scenario: Scenario, policy: ConflictPolicy) -> None:
        """SERVER_WINS never writes a conflicting field; CLIENT_WINS writes the whole patch."""
        decision = decide(scenario.server, scenario.change, policy)
        if decision.outcome is not Outcome.MERGED:
            return
        lost = {c.field for c in decision.conflicts}
        if policy is ConflictPolicy.SERVER_WINS:
            assert not lost & decision.apply.keys()
        else:
            assert decision.apply == scenario.change.patch

    @PROPERTY
    @given(realistic_scenarios(), policies)
    def test_disjoint_edits_always_land(self, scenario: Scenario, policy: ConflictPolicy) -> None:
        """An edit touching only fields the server left alone since base is written whole."""
        server, change = scenario.server, scenario.change
        if server is None or server.deleted or change.op is Op.DELETE:
            return
        if change.base_version is None:
            return
        base = seen(change, server)
        if changed_since(server.dots, base) & change.patch.keys():
            return
        decision = decide(server, change, policy)
        expected = (
            Outcome.APPLIED if compare(base, server.version) is Ordering.EQUAL else Outcome.MERGED
        )
        assert decision.outcome is expected
        assert decision.apply == change.patch
        assert decision.conflicts == ()

    @PROPERTY
    @given(realistic_scenarios(), policies)
    def test_tombstones_are_final(self, scenario: Scenario, policy: ConflictPolicy) -> None:
        """Every change to a tombstone from a real base is DELETED."""
        if scenario.server is None or not scenario.server.deleted:
            return
        assert decide(scenario.server, scenario.change, policy).outcome is Outcome.DELETED


class TestOwnWrites:
    """A device has seen its own writes, even those whose push response it lost."""

    def test_an_edit_after_a_lost_response_is_not_a_conflict(self) -> None:
        """The device wrote `name` at counter 2 but only saw counter 1 come back; editing
        `name` again from that older base is its own business, not a conflict."""
        server = ServerRecord(
            values={"name": "mine, second", "email": "e"},
            version={"server": 3, "dev": 2},
            dots={"name": ("dev", 2), "email": ("server", 3)},
            deleted=False,
        )
        change = IncomingChange(
            op=Op.UPSERT,
            base_version={"server": 3, "dev": 1},
            patch={"name": "mine, third"},
            replica="dev",
            sees_own_writes=True,
        )
        decision = decide(server, change, ConflictPolicy.MANUAL)
        assert decision.outcome is Outcome.APPLIED
        assert decision.apply == {"name": "mine, third"}

    def test_another_devices_write_still_conflicts(self) -> None:
        """The same situation with the field last written by someone else is a conflict."""
        server = ServerRecord(
            values={"name": "theirs"},
            version={"server": 3, "dev": 2, "other": 1},
            dots={"name": ("other", 1)},
            deleted=False,
        )
        change = IncomingChange(
            op=Op.UPSERT,
            base_version={"server": 3, "dev": 1},
            patch={"name": "mine"},
            replica="dev",
        )
        assert decide(server, change, ConflictPolicy.MANUAL).outcome is Outcome.CONFLICT

    @PROPERTY
    @given(
        values=st.fixed_dictionaries(dict.fromkeys(("name", "email", "phone"), st.integers(0, 3))),
        own=st.integers(1, 6),
        seen_own=st.integers(0, 6),
        writers=st.lists(st.booleans(), min_size=3, max_size=3),
        patch=st.dictionaries(st.sampled_from(("name", "email", "phone")), st.integers(0, 3)),
        policy=st.sampled_from(ConflictPolicy),
    )
    def test_fields_last_written_by_the_device_never_conflict(
        self, values, own, seen_own, writers, patch, policy
    ) -> None:
        """Whatever the device's base says of its own entry, a field whose last write is
        the device's own (or one the base covers) is never in conflict."""
        names = ("name", "email", "phone")
        dots = {
            n: (("dev", own) if mine else ("server", 2))
            for n, mine in zip(names, writers, strict=True)
        }
        server = ServerRecord(
            values=values, version={"server": 2, "dev": own}, dots=dots, deleted=False
        )
        base = {"server": 2, "dev": min(seen_own, own)}
        change = IncomingChange(
            op=Op.UPSERT, base_version=base, patch=patch, replica="dev", sees_own_writes=True
        )
        decision = decide(server, change, policy)
        assert decision.outcome in (Outcome.APPLIED, Outcome.MERGED), decision
        assert decision.conflicts == ()

    def test_online_editors_share_a_replica_and_still_conflict(self) -> None:
        """Online edits all write as the server's replica: one editor's write is not
        another's "own", so a stale online edit of the same field is a conflict."""
        server = ServerRecord(
            values={"name": "B's"},
            version={"server": 2},
            dots={"name": ("server", 2)},
            deleted=False,
        )
        change = IncomingChange(
            op=Op.UPSERT, base_version={"server": 1}, patch={"name": "A's"}, replica="server"
        )
        assert decide(server, change, ConflictPolicy.MANUAL).outcome is Outcome.CONFLICT


class TestWhoResolves:
    """A device says who settles its conflicts: the server (the tenant's policy) or itself."""

    @pytest.mark.parametrize("policy", list(ConflictPolicy))
    def test_a_client_resolver_gets_every_conflict_back(self, policy: ConflictPolicy) -> None:
        """Whatever the tenant's policy, a CLIENT device's edit of a field the server changed
        is a CONFLICT that writes the other fields, lists both values, and stores nothing."""
        change = upsert({"email": "phone@x.test", "phone": "556"})
        decision = decide(SERVER, change, policy, resolver=ConflictResolver.CLIENT)
        assert decision.outcome is Outcome.CONFLICT
        assert decision.apply == {"phone": "556"}
        assert decision.conflicts == (FieldConflict("email", "new@x.test", "phone@x.test"),)
        assert decision.store_conflict is False
        assert "returned version" in decision.message

    @pytest.mark.parametrize("policy", list(ConflictPolicy))
    def test_a_client_resolvers_delete_after_server_edits_is_a_conflict(
        self, policy: ConflictPolicy
    ) -> None:
        """A CLIENT device's delete over server edits deletes nothing and is not stored."""
        decision = decide(SERVER, delete(), policy, resolver=ConflictResolver.CLIENT)
        assert decision.outcome is Outcome.CONFLICT
        assert not writes(decision)
        assert decision.store_conflict is False

    def test_the_resolution_pushed_against_the_returned_version_applies(self) -> None:
        """The device's answer, edited from the version that covers the server's dots,
        is APPLIED: the server has nothing newer."""
        after = ServerRecord(
            values={**SERVER.values, "phone": "556"},
            version={"s": 2, "d": 2},
            dots={**SERVER.dots, "phone": ("d", 2)},
            deleted=False,
        )
        change = IncomingChange(
            Op.UPSERT, after.version, {"email": "phone@x.test"}, "d", sees_own_writes=True
        )
        decision = decide(after, change, ConflictPolicy.MANUAL, resolver=ConflictResolver.CLIENT)
        assert decision.outcome is Outcome.APPLIED
        assert decision.apply == {"email": "phone@x.test"}

    def test_only_a_server_resolved_manual_conflict_is_stored(self) -> None:
        """MANUAL stores the conflict for a person; SERVER_WINS settles it (nothing stored)."""
        change = upsert({"email": "phone@x.test"})
        assert decide(SERVER, change, ConflictPolicy.MANUAL).store_conflict is True
        assert decide(SERVER, delete(), ConflictPolicy.SERVER_WINS).store_conflict is False
        assert decide(SERVER, change, ConflictPolicy.SERVER_WINS).store_conflict is False

    @PROPERTY
    @given(realistic_scenarios(), policies, validators)
    def test_a_client_resolver_is_decided_as_manual_and_never_stored(
        self, scenario: Scenario, policy: ConflictPolicy, validate: Validator | None
    ) -> None:
        """For a CLIENT device the tenant's policy plays no part: the decision is MANUAL's
        (same outcome, writes, conflicts and errors) and nothing is stored."""
        client = decide(
            scenario.server, scenario.change, policy, validate, resolver=ConflictResolver.CLIENT
        )
        manual = decide(scenario.server, scenario.change, ConflictPolicy.MANUAL, validate)
        assert client.outcome is manual.outcome
        assert (client.apply, client.delete) == (manual.apply, manual.delete)
        assert client.conflicts == manual.conflicts
        assert client.field_errors == manual.field_errors
        assert client.store_conflict is False
