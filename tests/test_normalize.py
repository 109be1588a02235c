"""Trimming, UUID and subaccount checks: what passes can only be a safe, documented id."""

from __future__ import annotations

import re
import string
import sys
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulk_cancel import normalize
from bulk_cancel.normalize import canonical_uuid, clean, valid_subaccount

U = "3f2a6c1e-5b2d-4c6e-8a0b-7f3c9a1e5b2d"
SUBACCOUNT_CHARS = string.ascii_letters + string.digits + "-._&"


# ------------------------------------------------------------------------------ clean


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  abc  ", "abc"),
        ("\tabc\r\n", "abc"),
        ('"abc"', "abc"),
        ("'abc'", "abc"),
        (' " abc " ', "abc"),
        ("'\"abc\"'", "abc"),
        ("\u201cabc\u201d", "abc"),
        ("\u2018abc\u2019", "abc"),
        ("\u00ababc\u00bb", "abc"),
        ("\u00a0abc\u00a0", "abc"),
        ("\ufeffabc", "abc"),
        ("\u200babc\u200b", "abc"),
        ('ab"c', 'ab"c'),
        ("a b", "a b"),
        ("", ""),
        ('""', ""),
        ("   ", ""),
    ],
)
def test_clean_strips_whitespace_and_quotes(raw: str, expected: str) -> None:
    """Surrounding whitespace, straight/typographic quotes and invisible marks go; inner text stays."""
    assert clean(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, ""), (float("nan"), ""), (7, "7"), (1.5, "1.5")]
)
def test_clean_turns_missing_values_into_empty_text(raw: object, expected: str) -> None:
    """None and NaN are blank; other values become their str()."""
    assert clean(raw) == expected


def test_clean_treats_pandas_missing_values_as_blank() -> None:
    """pandas' NA and NaT are blank too (without normalize importing pandas)."""
    pd = pytest.importorskip("pandas")
    assert clean(pd.NA) == ""
    assert clean(pd.NaT) == ""


def test_whitespace_list_is_complete() -> None:
    """The hard-coded whitespace set is exactly what str.isspace() accepts."""
    computed = {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    assert set(normalize._WHITESPACE) == computed


@given(st.text())
def test_clean_is_idempotent(value: str) -> None:
    """Cleaning twice changes nothing more than cleaning once."""
    once = clean(value)
    assert clean(once) == once


@given(st.text())
def test_clean_leaves_no_surrounding_whitespace_or_quotes(value: str) -> None:
    """The result neither starts nor ends with whitespace or a quote."""
    out = clean(value)
    if out:
        for ch in (out[0], out[-1]):
            assert not ch.isspace()
            assert ch not in normalize._QUOTES


# ------------------------------------------------------------------------------ canonical_uuid


def test_canonical_uuid_lowercases() -> None:
    """An uppercase or mixed-case 8-4-4-4-12 UUID comes back lowercase."""
    assert canonical_uuid(U.upper()) == U
    assert canonical_uuid("3F2a6C1e-5b2d-4c6e-8a0b-7f3c9a1e5b2d") == U
    assert canonical_uuid(U) == U


def test_canonical_uuid_accepts_any_version_nibble() -> None:
    """8x8's own example umid is not an RFC 4122 version: the form is checked, not the version."""
    assert (
        canonical_uuid("bda3d56d-1424-e711-813c-06ed3428fe67")
        == "bda3d56d-1424-e711-813c-06ed3428fe67"
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        "{" + U + "}",
        U.replace("-", ""),
        "urn:uuid:" + U,
        " " + U,
        U + "\n",
        U[:-1],
        U + "0",
        U[:8] + "/" + U[9:],
        U[:8] + "%" + U[9:],
        U[:8] + "?" + U[9:],
        U[:8] + "#" + U[9:],
        U[:8] + " " + U[9:],
        U[:8] + "\x00" + U[9:],
        U[:8] + "_" + U[9:],
        "g" + U[1:],
        "\u0663" + U[1:],  # ARABIC-INDIC DIGIT THREE: a digit to \d, not to us
        "\uff41" + U[1:],  # FULLWIDTH LATIN SMALL LETTER A
        "../../" + U[6:],
        "-" * 36,
        "x" * 10_000,
    ],
)
def test_canonical_uuid_refuses_other_forms(value: str) -> None:
    """Braces, 32 hex digits, prefixes, whitespace, URL characters, controls and non-ASCII: None."""
    assert canonical_uuid(value) is None


def test_canonical_uuid_checks_length_first() -> None:
    """A 10 MB string is refused on its length, without scanning it."""
    assert canonical_uuid("a" * 10_000_000) is None


@given(st.text())
def test_canonical_uuid_is_only_ever_lowercase_hex_and_dashes(value: str) -> None:
    """Whatever goes in, what comes out is None or 36 characters of [0-9a-f-], and stable."""
    out = canonical_uuid(value)
    if out is not None:
        assert len(out) == 36
        assert re.fullmatch(r"[0-9a-f-]{36}", out)
        assert canonical_uuid(out) == out


@given(st.uuids(), st.booleans())
def test_canonical_uuid_accepts_every_uuid(value: uuid.UUID, upper: bool) -> None:
    """Every UUID in 8-4-4-4-12 form, in either case, is accepted and is idempotent."""
    text = str(value).upper() if upper else str(value)
    out = canonical_uuid(text)
    assert out == str(value)
    assert out is not None and canonical_uuid(out) == out


@given(st.text(alphabet="0123456789abcdefABCDEF-", min_size=30, max_size=40))
def test_canonical_uuid_agrees_with_the_uuid_module_on_near_misses(value: str) -> None:
    """For hex-and-dash strings, accepted exactly when it is 8-4-4-4-12 (checked via uuid.UUID)."""
    dashes_ok = [i for i, c in enumerate(value) if c == "-"] == [8, 13, 18, 23]
    expected = str(uuid.UUID(value)) if len(value) == 36 and dashes_ok else None
    assert canonical_uuid(value) == expected


# ------------------------------------------------------------------------------ subaccounts


@pytest.mark.parametrize("value", ["abc", "acme_hq", "A-b.c&d_9", "a" * 50, "...", "&&&"])
def test_valid_subaccount_accepts_the_documented_pattern(value: str) -> None:
    """3–50 of A-Z a-z 0-9 - . _ & pass."""
    assert valid_subaccount(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "ab",
        "..",
        "a" * 51,
        "acme\n",
        "acme hq",
        "acme/hq",
        "acme%2Fhq",
        "ac?me",
        "ac#me",
        "ácme",
        "acme\x00",
        "acme\t",
        "x" * 10_000,
    ],
)
def test_valid_subaccount_refuses_everything_else(value: str) -> None:
    """Too short, too long, a trailing newline, slashes, spaces, URL characters, non-ASCII: refused."""
    assert not valid_subaccount(value)


@given(st.text(max_size=60))
def test_valid_subaccount_matches_its_definition(value: str) -> None:
    """valid_subaccount is exactly '3–50 characters, each from the documented set'."""
    expected = 3 <= len(value) <= 50 and all(c in SUBACCOUNT_CHARS for c in value)
    assert valid_subaccount(value) == expected


@given(st.text(alphabet=SUBACCOUNT_CHARS, min_size=3, max_size=50))
def test_valid_subaccount_accepts_every_documented_id(value: str) -> None:
    """Any string built from the documented alphabet and length passes."""
    assert valid_subaccount(value)
