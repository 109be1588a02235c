"""The ``bulk-cancel simulate`` flags (the cli module owns the parser and the event loop)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

from ..errors import ConfigError
from .faults import Faults, parse_faults
from .state import SimulatorConfig

_EXAMPLE: Final = """\
example:
  bulk-cancel simulate --port 8088 --rate 400 --latency-ms 20 --faults http_503=0.02,drop_after=0.01
"""

_FAULTS_HELP: Final = (
    "faults as NAME=PROBABILITY,... (one draw per request, total at most 1): "
    "http_500, http_502 (HTML bodies), http_503 (empty body), drop_before (connection closed, "
    "nothing cancelled), burst_429 (429 whatever the rate); and, after the cancel IS applied: "
    "http_500_applied (500 code 2000), drop_after (connection closed), hang (answer held "
    "--hang-s), bad_json (200 body cut short)"
)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _rate(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _port(text: str) -> int:
    value = _rate(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port")
    return value


def _faults(text: str) -> Faults:
    try:
        return parse_faults(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` flags to *parser*; :func:`config_from_args` reads them back."""
    if parser.description is None:
        parser.description = (
            "Serve a local stand-in of 8x8's cancel endpoints, with rate limits and faults."
        )
    if parser.epilog is None:
        parser.epilog = _EXAMPLE
    server = parser.add_argument_group("server")
    server.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (keep it loopback)"
    )
    server.add_argument(
        "--port", type=_port, default=8088, help="TCP port to listen on; 0 picks a free one"
    )
    server.add_argument(
        "--latency-ms",
        type=_non_negative,
        default=0.0,
        metavar="MS",
        help="wait this long before each answer; concurrent requests overlap",
    )
    server.add_argument(
        "--latency-jitter-ms",
        type=_non_negative,
        default=0.0,
        metavar="MS",
        help="and up to this much longer, drawn evenly per answer (a real API's answers vary)",
    )
    server.add_argument(
        "--state-file",
        type=Path,
        metavar="PATH",
        help="on exit, write what the simulator saw (counts, cancelled ids) to this JSON file",
    )

    answers = parser.add_argument_group("answers")
    answers.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help="accept only this key (repeatable); without it any non-empty key is accepted",
    )
    answers.add_argument(
        "--rejected-subaccount",
        action="append",
        metavar="ID",
        help="answer 400 / 1001 for this subaccount (repeatable)",
    )
    answers.add_argument(
        "--not-found-ratio",
        type=_fraction,
        default=0.0,
        metavar="P",
        help="share of umids that are unknown (404 / 1300), fixed per umid by a hash",
    )
    answers.add_argument(
        "--already-sent-ratio",
        type=_fraction,
        default=0.0,
        metavar="P",
        help="share of umids already sent (200 with cancelledCount 0), fixed per umid by a hash",
    )
    answers.add_argument(
        "--repeat-cancel",
        choices=("zero", "not_found"),
        default="zero",
        help="answer to a second cancel of the same umid: 200 with 0, or 404 / 1300 "
        "(8x8 does not document which)",
    )
    answers.add_argument(
        "--batch-size",
        type=_rate,
        default=3,
        metavar="N",
        help="messages a batchId cancels the first time",
    )

    limits = parser.add_argument_group("rate limits and faults")
    limits.add_argument(
        "--rate",
        type=_rate,
        default=1800,
        metavar="N",
        help="requests per second per subaccount before 429 (8x8's default); 0: no limit",
    )
    limits.add_argument(
        "--ip-rate",
        type=_rate,
        default=3000,
        metavar="N",
        help="requests per second from all clients before 429 (8x8's per-IP default); 0: no limit",
    )
    limits.add_argument("--faults", type=_faults, default="none", metavar="SPEC", help=_FAULTS_HELP)
    limits.add_argument(
        "--seed", type=int, default=0, help="seed of the fault draws (same seed, same faults)"
    )
    limits.add_argument(
        "--hang-s",
        type=_non_negative,
        default=30.0,
        metavar="S",
        help="how long a hang fault holds its answer; make it longer than the client's timeout",
    )


def config_from_args(ns: argparse.Namespace) -> SimulatorConfig:
    """The :class:`SimulatorConfig` the ``simulate`` flags describe.

    Raises :class:`~bulk_cancel.errors.ConfigError` for settings that clash (ratios adding up to
    more than 1).
    """
    try:
        return SimulatorConfig(
            api_keys=frozenset(ns.api_key) if ns.api_key else None,
            rejected_subaccounts=frozenset(ns.rejected_subaccount or ()),
            not_found_ratio=ns.not_found_ratio,
            already_sent_ratio=ns.already_sent_ratio,
            repeat_cancel=ns.repeat_cancel,
            batch_size=ns.batch_size,
            rate_per_s=ns.rate or None,
            ip_rate_per_s=ns.ip_rate or None,
            latency_s=ns.latency_ms / 1000,
            latency_jitter_s=ns.latency_jitter_ms / 1000,
            faults=ns.faults,
            seed=ns.seed,
            hang_s=ns.hang_s,
        )
    except ValueError as exc:
        raise ConfigError(f"simulate: {exc}") from None
