"""A local stand-in for 8x8's cancel endpoints, with rate limits and faults.

The demo, the test-suite, the benchmark and users' own rehearsals run against it, so it is
product code: ``bulk-cancel simulate`` serves it, :func:`running_simulator` starts it in-process.

It answers exactly the two documented routes (``/work/shared/api/REFERENCE.md``)::

    DELETE /api/v1/subaccounts/{subAccountId}/messages/{umid}
    DELETE /api/v1/subaccounts/{subAccountId}/messages/batch/{batchId}

The path is split on ``/`` *before* percent-decoding, so an encoded ``%2F`` stays inside its
segment. Anything else that reaches it (another method, a query string, a dot-segment, an extra
or empty segment) is a *stray* request: counted in :class:`SimulatorState`, answered 404. Tests
use that count to prove that hostile ids never steer a request elsewhere.

Checks run in this order, like a gateway in front of an application:

1. route (stray → 404, code 1404);
2. rate limits, per subaccount and global, as a sliding 1-second window (→ 429, ``Retry-After: 1``);
3. a fault drawn for this request, if any (:class:`Faults`), then ``latency_s`` (plus up to
   ``latency_jitter_s``, drawn evenly per request);
4. ``Authorization: Bearer`` (→ 401 / 1200, or 403 / 1201), subaccount (→ 400 / 1001),
   umid or batchId (→ 400 / 1000);
5. the message: unknown (→ 404 / 1300), already sent (→ 200 ``{"cancelledCount":0}``) or
   scheduled (→ 200 ``{"cancelledCount":1}``, and it is now cancelled). Which one is a stable
   function of the umid: :func:`message_fate`. A second cancel answers per
   ``SimulatorConfig.repeat_cancel``, because 8x8 does not document it. A batchId cancels
   ``batch_size`` messages the first time, then 0.

Codes 1404 (stray) and 1429 (rate limit) are the simulator's own: 8x8 documents no code for
either, so a client can only classify them by status, as it would have to with the real API.

aiohttp is imported only when a server is built, so that ``bulk-cancel --help`` stays quick.
"""

from __future__ import annotations

from .app import RunningSimulator, build_app, running_simulator, serve
from .cli import add_arguments, config_from_args
from .faults import Faults, parse_faults
from .state import Fate, SimulatorConfig, SimulatorState, message_fate

__all__ = [
    "Fate",
    "Faults",
    "RunningSimulator",
    "SimulatorConfig",
    "SimulatorState",
    "add_arguments",
    "build_app",
    "config_from_args",
    "message_fate",
    "parse_faults",
    "running_simulator",
    "serve",
]
