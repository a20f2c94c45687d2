"""Email checks: the fast path of sync.validation never accepts what email-validator refuses."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.validation import _surely_valid_email, camel, is_valid_email


def library_accepts(value: str) -> bool:
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


# Near the fast path's shape, with the characters and lengths that make addresses invalid.
_local = st.text(alphabet="abcXYZ019._+-!#'~\"@ ", min_size=0, max_size=70)
_label = st.text(alphabet="abz09-_.A", min_size=0, max_size=70)
_tld = st.sampled_from(
    ["com", "test", "localhost", "invalid", "onion", "arpa", "local", "c0m", "1", "xn--p1ai", ""]
)
_emails = st.builds(
    lambda local, labels, tld: f"{local}@{'.'.join([*labels, tld])}",
    _local,
    st.lists(_label, min_size=0, max_size=4),
    _tld,
)


@settings(max_examples=3000)
@given(_emails)
def test_fast_path_only_accepts_what_the_library_accepts(value: str) -> None:
    if _surely_valid_email(value):
        assert library_accepts(value), value
    assert is_valid_email(value) == library_accepts(value)


def test_fast_path_examples() -> None:
    assert _surely_valid_email("ops.team-42@example-corp.com")
    assert _surely_valid_email("device-1-2@mail.example.com")
    for refused_by_both in ("a@b.test", "x@localhost", "a..b@c.com", "a@-b.com", "a@b.co1"):
        assert not _surely_valid_email(refused_by_both)
        assert not is_valid_email(refused_by_both)
    # Shapes outside the fast path still get the library's answer.
    assert is_valid_email("A@B.COM")
    assert is_valid_email("a@xn--bcher-kva.ch")
    assert not is_valid_email(f"{'a' * 250}@b.com")
    assert not is_valid_email(f"a@{'b' * 64}.com")


def test_camel() -> None:
    assert camel("install_date") == "installDate"
    assert camel("email") == "email"
    assert camel("notification_emails") == "notificationEmails"
