"""Opaque checkpoints round-trip and refuse anything this server did not issue."""

from __future__ import annotations

from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.checkpoint import (
    ALL_TYPES,
    Checkpoint,
    InvalidCheckpointError,
    OtherFeedError,
    decode,
    encode,
    feed_of,
    feed_types,
)


class TestCheckpoint:
    @given(st.integers(0, 2**62), st.integers(-1, 10), st.one_of(st.none(), st.uuids()), st.data())
    def test_round_trip(self, seq, rank, record_id, data):
        """decode(encode(c)) == c for every position, with the pull's starting seq."""
        base = data.draw(st.one_of(st.none(), st.integers(0, seq - 1) if seq else st.none()))
        checkpoint = Checkpoint(seq, rank, record_id, base)
        assert decode(encode(checkpoint)) == checkpoint
        assert checkpoint.since == (seq if base is None else base)

    def test_none_is_the_beginning(self):
        """No checkpoint means from the start."""
        assert decode(None) == Checkpoint()
        assert decode("") == Checkpoint()

    @pytest.mark.parametrize(
        "raw", ["v2.1.-1..1", "v1.x.-1..1", "v1.-1.-1..-1", "v1.5.-1..9", "v1.1.-1.", "v1.1.2.zz.1"]
    )
    def test_forged_values_are_refused(self, raw):
        """Wrong prefix, non-numbers, negative seqs, a start after the position, missing
        parts and bad ids are refused."""
        import base64

        with pytest.raises(InvalidCheckpointError):
            decode(base64.urlsafe_b64encode(raw.encode()).decode())

    @pytest.mark.parametrize("bad", ["garbage", "%%%"])
    def test_non_base64_is_refused(self, bad):
        """Anything that is not our encoding is refused."""
        with pytest.raises(InvalidCheckpointError):
            decode(bad)

    def test_positions_order_by_seq_then_rank_then_id(self):
        """A position inside a group sorts after the group's start."""
        rid = uuid4()
        assert Checkpoint(5) < Checkpoint(5, 2, rid) < Checkpoint(6)
        assert Checkpoint(5).at_boundary
        assert not Checkpoint(5, 2, rid).at_boundary

    @pytest.mark.parametrize(
        "raw",
        [
            "v1.5.99999999999999999999.%s.5" % ("a" * 32),
            "v1.9223372036854775808.-1..9223372036854775808",
            "v1.5.2147483648.%s.5" % ("a" * 32),
            "v1.5.-2.%s.5" % ("a" * 32),
        ],
    )
    def test_positions_past_the_database_types_are_refused(self, raw):
        """A seq beyond bigint or a rank beyond integer was never issued: refused here
        rather than failing later as a query parameter."""
        import base64

        with pytest.raises(InvalidCheckpointError):
            decode(base64.urlsafe_b64encode(raw.encode()).decode())

    def test_the_largest_positions_round_trip(self):
        """The bounds themselves are still positions."""
        checkpoint = Checkpoint(2**63 - 1, 2**31 - 1, uuid4(), 0)
        assert decode(encode(checkpoint)) == checkpoint

    def test_a_refusal_quotes_only_the_start_of_the_value(self):
        """A megabyte of garbage is not echoed back."""
        with pytest.raises(InvalidCheckpointError) as info:
            decode("x" * 1_000_000)
        assert len(str(info.value)) < 200


EVERY = ("customer", "contact", "facility", "asset", "credential")


def raw(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(text.encode()).decode()


class TestFeeds:
    @given(
        st.integers(0, 2**62),
        st.sampled_from([0, 1]),
        st.integers(-1, 10),
        st.one_of(st.none(), st.uuids()),
        st.sets(st.sampled_from(EVERY), min_size=1),
    )
    def test_round_trip_with_kind_and_feed(self, seq, kind, rank, record_id, types):
        """Positions keep their kind (evictions first) and the feed they belong to."""
        feed = feed_of(types, EVERY)
        checkpoint = Checkpoint(seq, rank, record_id, None, kind, feed)
        assert decode(encode(checkpoint), feed, known=EVERY) == checkpoint
        assert feed_types(feed, EVERY) == frozenset(types)

    def test_feed_names(self):
        """No filter and a filter of every type are the same feed; others are named by
        their sorted types; an empty filter is no feed."""
        assert feed_of(None, EVERY) == feed_of(list(EVERY), EVERY) == ALL_TYPES
        assert feed_of(["facility", "asset", "asset"], EVERY) == "asset+facility"
        with pytest.raises(ValueError, match="at least one"):
            feed_of([], EVERY)

    def test_the_beginning_of_a_feed(self):
        """No checkpoint is the beginning of the feed asked for."""
        assert decode(None, "asset") == Checkpoint(feed="asset")
        assert decode("", None) == Checkpoint()

    def test_a_checkpoint_of_another_feed_is_refused_saying_so(self):
        """A real checkpoint sent with other types is refused, naming its feed."""
        value = encode(Checkpoint(5, feed="asset+facility"))
        with pytest.raises(OtherFeedError, match=r"feed of types \[ASSET, FACILITY\], not \[all\]"):
            decode(value, ALL_TYPES)
        with pytest.raises(OtherFeedError, match=r"not \[ASSET\]"):
            decode(value, "asset")

    def test_v1_checkpoints_belong_to_the_all_types_feed(self):
        """Contract v1's checkpoints are positions of the all-types feed."""
        rid = uuid4()
        assert decode(raw(f"v1.7.2.{rid.hex}.5"), ALL_TYPES) == Checkpoint(7, 2, rid, 5)
        with pytest.raises(OtherFeedError):
            decode(raw("v1.7.-1..7"), "asset")

    @pytest.mark.parametrize(
        "text",
        [
            "v2.1.2.-1..1.*",  # an unknown kind
            "v2.1.1.-1..1.facility+asset",  # types out of order
            "v2.1.1.-1..1.asset+asset",  # a type twice
            "v2.1.1.-1..1.",  # no feed
            "v2.1.1.-1..1.ASSET",  # not as issued
            "v2.1.1.-1..1.invoice",  # not a record type
            "v2.1.1.-1..1.*.x",  # a part too many
            "v1.1.-1..1.*",  # v1 had no feed
        ],
    )
    def test_forged_feeds_are_refused(self, text):
        """Kinds, feed names and shapes this server never issues are refused as such."""
        with pytest.raises(InvalidCheckpointError) as info:
            decode(raw(text), ALL_TYPES, known=EVERY)
        assert not isinstance(info.value, OtherFeedError)
