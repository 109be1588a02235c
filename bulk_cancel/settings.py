"""The settings of one run: a frozen dataclass built at the edge (cli) and passed down.

Also the facts that turn a product and region into a host (REFERENCE.md, "Hosts by region"),
and the checks that make a setting safe to use before anything is sent.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

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
    shard: Shard | None = None
    """Only this shard's rows (``--shard K/N``); each subaccount is paced at rate / N."""

    def public(self) -> dict[str, Any]:
        """The settings as plain values for the summary and ``config show`` (there is no key here)."""
        values = asdict(self)
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
