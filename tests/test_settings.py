"""Settings checks made before anything is sent."""

from __future__ import annotations

import pytest

from bulk_cancel.errors import ConfigError
from bulk_cancel.settings import HOSTS, base_url_for, check_base_url, check_subaccount


@pytest.mark.parametrize(
    "url",
    ["https://chatapps.8x8.com", "http://127.0.0.1:8088", "http://localhost:1", "http://[::1]:9/"],
)
def test_https_and_loopback_http_are_accepted(url: str) -> None:
    """https anywhere, plain http only to loopback (the simulator)."""
    assert check_base_url(url, allow_insecure_http=False) == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://chatapps.8x8.com",
        "ftp://x.example",
        "chatapps.8x8.com",
        "https://u:p@h.example",
        "https://h.example/?a=1",
    ],
)
def test_unsafe_base_urls_are_refused(url: str) -> None:
    """Plain http to a real host, other schemes, credentials or queries in the URL are refused."""
    with pytest.raises(ConfigError):
        check_base_url(url, allow_insecure_http=False)


def test_insecure_http_needs_the_explicit_flag() -> None:
    """--allow-insecure-http lets plain http through to a non-loopback host."""
    assert (
        check_base_url("http://proxy.internal:8080", allow_insecure_http=True)
        == "http://proxy.internal:8080"
    )


@pytest.mark.parametrize("bad", ["ab", "a" * 51, "acme/hq", "acme hq", "ac\nme", "ünï"])
def test_subaccount_pattern(bad: str) -> None:
    """A --subaccount outside ^[A-Za-z0-9-._&]{3,50}$ is refused."""
    with pytest.raises(ConfigError):
        check_subaccount(bad)
    assert check_subaccount("acme-hq_1.&x") == "acme-hq_1.&x"


def test_every_region_has_both_products() -> None:
    """Each documented region maps to a chatapps and an SMS host."""
    assert base_url_for("sms", "eu") == "https://sms.8x8.uk"
    assert set(HOSTS["chatapps"]) == set(HOSTS["sms"]) == {"asia", "us", "eu", "id"}
    with pytest.raises(ConfigError):
        base_url_for("fax", "asia")
