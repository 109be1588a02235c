"""The settings of one run: a frozen dataclass built at the edge (cli) and passed down.

Also the facts that turn a product and region into a host (REFERENCE.md, "Hosts by region"),
and the checks that make a setting safe to use before anything is sent.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

from .errors import ConfigError
from .policy import DOCUMENTED_IP_RATE_PER_S, DOCUMENTED_RATE_PER_S, RetryPolicy
from .shard import Shard

#: Environment variable holding the API key; the key is never a flag or a file setting.
API_KEY_ENV: Final = "EIGHTX8_API_KEY"

#: 8x8's hosts by product and region (REFERENCE.md).
HOSTS: Final[dict[str, dict[str, str]]] = {
    "chatapps": {
        "asia": "https://chatapps.8x8.com",
        "us": "https://chatapps.us.8x8.com",
        "eu": "https://chatapps.8x8.uk",
        "id": "https://chatapps.8x8.id",
    },
    "sms": {
        "asia": "https://sms.8x8.com",
        "us": "https://sms.us.8x8.com",
        "eu": "https://sms.8x8.uk",
        "id": "https://sms.8x8.id",
    },
}
DEFAULT_BASE_URL: Final = HOSTS["chatapps"]["asia"]

SUBACCOUNT_PATTERN: Final = re.compile(r"[A-Za-z0-9\-._&]{3,50}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSettings:
    """Everything one ``bulk-cancel run`` needs, except the key."""

    input: str | None
    output: Path
    subaccount: str | None = None
    column: str | None = None
    subaccount_column: str | None = None
    sheet: str | None = None
    header_row: int | None = None
    encoding: str | None = None
    batch_id: str | None = None
    base_url: str = DEFAULT_BASE_URL
    rate_per_s: float = 1500.0
    ip_rate_per_s: float = DOCUMENTED_IP_RATE_PER_S
    concurrency: int | None = None
    timeout_s: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    failure_threshold: float = 0.5
    failure_window: int = 1000
    max_rows: int | None = None
    resume: bool = False
    retry_failed: bool = False
    dry_run: bool = False
    split: bool = False
    metrics_file: Path | None = None
    job: str = "bulk-cancel"
    allow_insecure_http: bool = False
    job_file: Path | None = None
    """The job file this run came from, if any: the resume and retry commands name it."""
    archive_dir: Path | None = None
    """Set when this run is one file of a drop folder (the job's ``archive_dir``)."""
    command_flags: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    """The flags the printed resume and retry commands repeat, and notes on them (passwords left
    out): :func:`bulk_cancel.config.command_flags`."""
    proxy: str | None = field(default=None, repr=False)
    """The forward proxy's URL, from the settings or the environment; ``None`` goes direct.
    It may hold a password: shown only through :func:`mask_url`."""
    proxy_source: str | None = None
    """Where the proxy came from: a setting's layer, or the variable (``HTTPS_PROXY``)."""
    ca_bundle: Path | None = None
    """A PEM file of CAs to trust instead of the system's."""
    shard: Shard | None = None
    """Only this shard's rows (``--shard K/N``); each subaccount is paced at rate / N."""

    def public(self) -> dict[str, Any]:
        """The settings as plain values for the summary and ``config show``: no key, and the
        proxy's password masked."""
        values = asdict(self)
        if self.proxy is not None:
            values["proxy"] = mask_url(self.proxy)
        values["shard"] = None if self.shard is None else str(self.shard)
        return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}

    @property
    def lane_rate_per_s(self) -> float:
        """Each subaccount's pace in this process: N shards share the subaccount's limit."""
        return self.rate_per_s / (self.shard.count if self.shard is not None else 1)

    def warnings(self) -> list[str]:
        """Settings that are allowed but worth a word."""
        notes = []
        if self.rate_per_s > DOCUMENTED_RATE_PER_S:
            notes.append(
                f"--rate {self.rate_per_s:g} is above 8x8's documented {DOCUMENTED_RATE_PER_S:g}/s "
                "per subaccount; fine if 8x8 raised your limit, otherwise expect 429s"
            )
        return notes


def check_subaccount(value: str) -> str:
    """Validate a subaccount id given as a setting (not a row): bad → ConfigError."""
    if not SUBACCOUNT_PATTERN.fullmatch(value):
        raise ConfigError(
            f"--subaccount {value[:60]!r} is not a subaccount id: 3–50 characters of "
            "letters, digits and - . _ &"
        )
    return value


def check_base_url(url: str, *, allow_insecure_http: bool) -> str:
    """A base URL must be https, or http to a loopback address (the simulator)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(
            f"--base-url {url!r} is not an http(s) URL, e.g. https://chatapps.8x8.com"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(
            f"--base-url {url!r} must not carry a query, fragment or credentials; "
            "the key comes from EIGHTX8_API_KEY"
        )
    if parts.scheme == "http" and not (allow_insecure_http or _is_loopback(parts.hostname)):
        raise ConfigError(
            f"--base-url {url!r} is plain http to a non-loopback host: the API key would travel "
            "unencrypted; use https, or add --allow-insecure-http if you really mean it"
        )
    return url.rstrip("/")


def base_url_for(product: str, region: str) -> str:
    """The documented host for *product* (chatapps | sms) in *region* (asia | us | eu | id)."""
    try:
        return HOSTS[product][region]
    except KeyError:
        raise ConfigError(
            f"no 8x8 host for product {product!r} in region {region!r}: products are "
            f"{', '.join(HOSTS)}, regions are {', '.join(HOSTS['chatapps'])}"
        ) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------------------ the network


#: Environment variables naming a proxy, by the base URL's scheme, in the order curl reads them.
_PROXY_VARS: Final = {
    "https": ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"),
    "http": ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"),
}
_NO_PROXY_VARS: Final = ("no_proxy", "NO_PROXY")


def mask_url(url: str) -> str:
    """*url* with its password (if any) shown as ``****``: how a proxy URL appears anywhere."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    netloc = f"{user}:****@{hostport}" if colon else f"{user}@{hostport}"
    return urlunsplit(parts._replace(netloc=netloc))


def url_secrets(url: str | None) -> list[str]:
    """The password in *url*, as written and percent-decoded: what the logs must redact."""
    if not url:
        return []
    userinfo, at, _ = urlsplit(url).netloc.rpartition("@")
    _, colon, password = userinfo.partition(":")
    if not (at and colon and password):
        return []
    return list({password, unquote(password)})


def proxy_from_env(base_url: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """The proxy curl and pip would use for *base_url*: ``(url, variable)``, or None for direct.

    ``https_proxy`` / ``HTTPS_PROXY`` for an https base URL, ``http_proxy`` / ``HTTP_PROXY`` for
    http, ``all_proxy`` / ``ALL_PROXY`` for either; the lower-case name wins. ``no_proxy`` /
    ``NO_PROXY`` lists hosts that go direct: ``*`` for all, a name (``example.com`` also covers
    ``api.example.com``; a leading dot is the same), an IP address or a CIDR block. A value
    without a scheme is read as ``http://``, as curl does.
    """
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    for name in _PROXY_VARS.get(parts.scheme, ()):
        value = env.get(name, "").strip()
        if value:
            break
    else:
        return None
    for name_np in _NO_PROXY_VARS:
        if name_np in env:
            if _bypassed(host, env[name_np]):
                return None
            break
    return (value if "://" in value else f"http://{value}"), name


def _bypassed(host: str, no_proxy: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.replace(" ", ",").split(","):
        entry = raw.strip().lower().strip("[]")
        if not entry:
            continue
        if entry == "*":
            return True
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        entry = entry.removeprefix("*").removeprefix(".")
        if host == entry or host.endswith("." + entry):
            return True
    return False


def check_proxy(url: str, *, where: str) -> str:
    """A proxy URL must be ``http://`` or ``https://`` with a host: bad → ConfigError naming *where*."""
    parts = urlsplit(url)
    shown = mask_url(url)
    if parts.scheme.startswith("socks"):
        raise ConfigError(
            f"{where} {shown!r}: SOCKS proxies are not supported; use an HTTP proxy (http://host:port)"
        )
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise ConfigError(
            f"{where} {shown!r} is not a proxy URL, e.g. http://proxy.example.com:3128 "
            "(credentials: http://user:password@proxy.example.com:3128)"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"{where} {shown!r}: a proxy URL is scheme://host:port, nothing after")
    return url


def check_ca_bundle(path: Path, *, where: str) -> Path:
    """A CA bundle must be a readable PEM file OpenSSL can load: bad → ConfigError."""
    try:
        ssl.create_default_context(cafile=str(path))
    except FileNotFoundError:
        raise ConfigError(f"{where} {path}: no such file") from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{where} {path}: not a PEM file of CA certificates ({exc}); export your "
            "network's CA as PEM (-----BEGIN CERTIFICATE-----)"
        ) from None
    return path
