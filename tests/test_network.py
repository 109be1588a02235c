"""Network settings: which proxy a run takes (settings, then the environment as curl reads it),
how its password is kept out of sight, and the CA bundle's checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
import trustme
from helpers import ScriptedCanceller, make_ledger, umids
from structlog.testing import capture_logs

from bulk_cancel import config, logs
from bulk_cancel.errors import ConfigError
from bulk_cancel.model import Exchange
from bulk_cancel.pipeline import Pipeline, PipelineSettings, StopReason
from bulk_cancel.policy import Stop, judge
from bulk_cancel.settings import check_proxy, mask_url, proxy_from_env, url_secrets

API = "https://chatapps.8x8.com"


def test_mask_url_hides_the_password_only() -> None:
    """The password becomes ****; user, host and port stay, so the proxy can still be named."""
    assert mask_url("http://ops:p%40ss@proxy.corp:3128") == "http://ops:****@proxy.corp:3128"
    assert mask_url("http://ops@proxy.corp:3128") == "http://ops@proxy.corp:3128"
    assert mask_url("http://proxy.corp:3128") == "http://proxy.corp:3128"
    assert mask_url("http://a:b:c@[::1]:3128") == "http://a:****@[::1]:3128"


def test_url_secrets_are_the_password_as_written_and_decoded() -> None:
    """Both spellings of the password are redacted from logs; a URL without one gives none."""
    assert sorted(url_secrets("http://ops:p%40ss@proxy:3128")) == ["p%40ss", "p@ss"]
    assert url_secrets("http://proxy:3128") == [] and url_secrets(None) == []


@pytest.mark.parametrize(
    ("env", "url", "expected"),
    [
        ({"HTTPS_PROXY": "http://p:3128"}, API, ("http://p:3128", "HTTPS_PROXY")),
        ({"https_proxy": "http://low:1", "HTTPS_PROXY": "http://up:2"}, API, ("http://low:1", "https_proxy")),
        ({"HTTP_PROXY": "http://p:3128"}, API, None),
        ({"HTTP_PROXY": "http://p:3128"}, "http://127.0.0.1:8088", ("http://p:3128", "HTTP_PROXY")),
        ({"ALL_PROXY": "http://p:3128"}, API, ("http://p:3128", "ALL_PROXY")),
        ({"HTTPS_PROXY": "p:3128"}, API, ("http://p:3128", "HTTPS_PROXY")),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "8x8.com"}, API, None),
        ({"HTTPS_PROXY": "http://p:3128", "no_proxy": ".8x8.com"}, API, None),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "*"}, API, None),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "x8.com, other.org"}, API, ("http://p:3128", "HTTPS_PROXY")),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "127.0.0.0/8"}, "https://127.0.0.1:9", None),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "::1"}, "https://[::1]:9", None),
        ({"HTTPS_PROXY": "   "}, API, None),
    ],
)  # fmt: skip
def test_proxy_from_env_reads_the_environment_as_curl_does(
    env: dict[str, str], url: str, expected: tuple[str, str] | None
) -> None:
    """The scheme's variable (lower case first), ALL_PROXY, a bare host:port as http://, and
    NO_PROXY by name suffix, '*', IP or CIDR."""
    assert proxy_from_env(url, env) == expected


@pytest.mark.parametrize(
    "url",
    ["socks5://p:1080", "ftp://p:21", "http://", "http://p:notaport", "http://p:3128/path", "p"],
)
def test_a_bad_proxy_url_is_a_config_error_without_its_password(url: str) -> None:
    """A proxy URL that aiohttp could not use is refused before anything is sent."""
    with pytest.raises(ConfigError, match="--proxy"):
        check_proxy(url, where="--proxy")
    with pytest.raises(ConfigError) as info:
        check_proxy("socks5://u:hunter22@p:1080", where="--proxy")
    assert "hunter22" not in str(info.value)


def resolve(env: dict[str, str], **flags: object) -> config.ResolvedSettings:
    return config.resolve(flags, env, None, None)


def test_a_proxy_setting_overrides_the_environment() -> None:
    """--proxy beats BULK_CANCEL_PROXY, which beats HTTPS_PROXY; each source is told."""
    env = {"HTTPS_PROXY": "http://env:1", "BULK_CANCEL_PROXY": "http://mine:2"}
    assert resolve(env)["proxy"] == "http://mine:2"
    assert str(resolve(env).sources["proxy"]) == "env BULK_CANCEL_PROXY"
    got = resolve(env, proxy="http://flag:3")
    assert got["proxy"] == "http://flag:3" and str(got.sources["proxy"]) == "flag --proxy"
    only_env = resolve({"HTTPS_PROXY": "http://env:1"})
    assert only_env["proxy"] == "http://env:1"
    assert str(only_env.sources["proxy"]) == "env HTTPS_PROXY"
    direct = resolve({"HTTPS_PROXY": "http://env:1", "NO_PROXY": "8x8.com"})
    assert direct["proxy"] is None and "NO_PROXY" in str(direct.sources["proxy"])


def test_config_show_masks_the_proxy_password() -> None:
    """`config show` (table and JSON) names the proxy without its password."""
    resolved = resolve({"HTTPS_PROXY": "http://ops:hunter22@proxy:3128"})
    rows = {name: value for name, value, _ in config.show_rows(resolved)}
    assert rows["proxy"] == "http://ops:****@proxy:3128"
    assert config.show_data(resolved)["proxy"]["value"] == "http://ops:****@proxy:3128"


def test_run_settings_carry_the_proxy_masked_in_public(tmp_path: Path) -> None:
    """The summary's settings show the proxy masked and where it came from."""
    resolved = resolve({"HTTPS_PROXY": "http://ops:hunter22@proxy:3128"}, subaccount="acme_hq")
    settings = config.to_run_settings(
        resolved, input="ids.csv", output=tmp_path / "r.csv", resume=False
    )
    assert settings.proxy == "http://ops:hunter22@proxy:3128"
    public = settings.public()
    assert public["proxy"] == "http://ops:****@proxy:3128"
    assert public["proxy_source"] == "env HTTPS_PROXY"
    assert "hunter22" not in repr(settings)


def test_a_bad_proxy_in_the_environment_names_the_variable(tmp_path: Path) -> None:
    """HTTPS_PROXY=socks5://… is refused with the variable's name (exit 2, nothing sent)."""
    resolved = resolve({"HTTPS_PROXY": "socks5://p:1080"}, subaccount="acme_hq")
    with pytest.raises(ConfigError, match=r"HTTPS_PROXY.*SOCKS"):
        config.to_run_settings(resolved, input="ids.csv", output=tmp_path / "r.csv", resume=False)


def test_a_ca_bundle_must_be_a_pem_file(tmp_path: Path) -> None:
    """A missing or non-PEM CA bundle is a config error naming it; a real one is kept."""
    base = {"subaccount": "acme_hq"}
    for name, text in (("missing.pem", None), ("junk.pem", "not a certificate\n")):
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        resolved = resolve({}, ca_bundle=path, **base)
        with pytest.raises(ConfigError, match=name):
            config.to_run_settings(
                resolved, input="ids.csv", output=tmp_path / "r.csv", resume=False
            )
    good = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(good))
    settings = config.to_run_settings(
        resolve({}, ca_bundle=good, **base), input="i.csv", output=tmp_path / "r.csv", resume=False
    )
    assert settings.ca_bundle == good


def test_logs_redact_the_proxy_password() -> None:
    """A log line holding the proxy URL, whichever spelling, shows no password."""
    url = "http://ops:p%40ss-word@proxy:3128"
    with capture_logs(processors=[logs.RedactSecrets(url_secrets(url))]) as events:
        structlog.get_logger("t").info("x", proxy=url, decoded="p@ss-word")
    (event,) = events
    assert event["proxy"] == "http://ops:[REDACTED]@proxy:3128"
    assert "p%40ss-word" not in str(event) and "p@ss-word" not in str(event)


def test_judge_stops_the_run_on_a_blocked_way() -> None:
    """A blocked way is no outcome for the row (nothing was sent) but stops the run."""
    exchange = Exchange(transport_error="x", request_sent=False, blocked_by="the proxy … 407")
    verdict = judge(exchange, was_ambiguous=False)
    assert verdict.outcome is None and verdict.stop is Stop.RUN and not verdict.ambiguous
    assert verdict.detail == "the proxy … 407"


async def test_a_blocked_way_stops_the_run_and_leaves_every_row_resumable(tmp_path: Path) -> None:
    """The first blocked answer stops the run without retries; every row stays not_attempted."""
    ids = umids(50)
    ledger = make_ledger(tmp_path / "r.ledger.sqlite", [("acme_hq", u) for u in ids])
    blocked = "the proxy http://u:****@127.0.0.1:9 cannot be reached (refused)"
    canceller = ScriptedCanceller(
        lambda target, n: Exchange(transport_error=blocked, request_sent=False, blocked_by=blocked)
    )
    pipeline = Pipeline(ledger, canceller, PipelineSettings(rate_per_s=1000, concurrency=4))
    report = await pipeline.run()
    assert report.stop_reason == StopReason.NETWORK and report.stop_detail == blocked
    assert ledger.counts() == {"not_attempted": len(ids)}
    assert 1 <= len(canceller.calls) <= 4  # at most one try per worker, none retried
    ledger.close()
