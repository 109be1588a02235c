"""The faults the simulator can inject: one draw per request, each with its probability."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Final


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    """How often each kind of failure happens: a probability per request, all 0 by default.

    One draw per request picks at most one fault, so the probabilities must add up to 1 or less.
    "Applied" faults cancel the message first and then lose or garble the answer: the cases a
    client cannot tell apart from a failure that changed nothing.
    """

    http_500: float = 0.0
    """500 with an HTML body; nothing applied."""
    http_502: float = 0.0
    """502 with an HTML body (a proxy's); nothing applied."""
    http_503: float = 0.0
    """503 with an empty body; nothing applied."""
    http_500_applied: float = 0.0
    """The cancel IS applied, then 500 JSON code 2000: an answer that lies about failure."""
    drop_before: float = 0.0
    """The connection closes without an answer; nothing applied."""
    drop_after: float = 0.0
    """The cancel is applied, then the connection closes without an answer."""
    hang: float = 0.0
    """The cancel is applied, then the answer waits ``SimulatorConfig.hang_s``."""
    bad_json: float = 0.0
    """The cancel is applied, then the body is cut short (``{"cancelledCo``)."""
    burst_429: float = 0.0
    """429 with ``Retry-After: 1`` whatever the rate; nothing applied."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0.0 <= value <= 1.0:  # also refuses NaN
                raise ValueError(f"fault {f.name}={value}: a probability must be between 0 and 1")
        if self.total > 1.0 + 1e-9:
            raise ValueError(
                f"fault probabilities add up to {self.total:g}; one draw per request needs 1 or less"
            )

    @property
    def total(self) -> float:
        """The probability that a request meets some fault."""
        return float(sum(getattr(self, f.name) for f in fields(self)))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every fault kind, in declaration order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def mix(cls, p: float, *, exclude: Iterable[str] = ()) -> Faults:
        """Every fault kind (less *exclude*) in equal shares, adding up to probability *p*."""
        skip = set(exclude)
        unknown = skip - set(cls.names())
        if unknown:
            raise ValueError(f"unknown fault(s) {', '.join(sorted(unknown))}")
        kinds = [name for name in cls.names() if name not in skip]
        if not kinds:
            return cls()
        share = p / len(kinds)
        return cls(**dict.fromkeys(kinds, share))

    def spec(self) -> str:
        """The ``--faults`` text that :func:`parse_faults` turns back into these faults."""
        parts = [
            f"{f.name}={getattr(self, f.name):g}" for f in fields(self) if getattr(self, f.name)
        ]
        return ",".join(parts) or "none"


#: Faults that replace the answer before anything is applied.
FAULTS_BEFORE: Final = frozenset({"http_500", "http_502", "http_503", "drop_before", "burst_429"})


def parse_faults(spec: str) -> Faults:
    """``"http_500=0.05,drop_after=0.01"`` → :class:`Faults`. ``""`` or ``"none"`` means no faults.

    Raises ValueError naming the problem: an unknown fault, a missing ``=``, a value that is not
    a number in [0, 1], a fault given twice, or probabilities adding up to more than 1.
    """
    text = spec.strip()
    if text.lower() in {"", "none"}:
        return Faults()
    known = Faults.names()
    values: dict[str, float] = {}
    for item in text.split(","):
        name, sep, raw = (part.strip() for part in item.partition("="))
        if not sep or not name:
            raise ValueError(f"expected NAME=PROBABILITY, got {item.strip()!r}")
        if name not in known:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(known)}")
        if name in values:
            raise ValueError(f"fault {name} is given twice")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"fault {name}: {raw!r} is not a number") from None
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"fault {name}={raw}: a probability must be between 0 and 1")
        values[name] = value
    return Faults(**values)
