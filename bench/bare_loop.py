"""The baseline of the overhead figure: the least a Python client can do to cancel a file of umids.

Read the ids with the csv module, then 64 fixed worker tasks share one ClientSession and DELETE
each id, parsing each body with orjson: no ledger, no results, no logging, no retries, no rate
limit. The session is set up as bulk-cancel's client sets up its own: a connector holding as many
connections as requests in flight, the key in a default header, on uvloop.
Run as its own process, like ``bulk-cancel run``, so both are timed end to end, start-up included.

    python bench/bare_loop.py URL CSV SUBACCOUNT KEY [--workers 64] [--loop uvloop|asyncio]
                              [--rate PER_S]

With ``--rate``, request *i* leaves at ``i / rate`` seconds at the earliest (a plain slot clock,
one timer per request): the floor of the CPU-at-the-ceiling figure, on this machine, now.

Prints one JSON line: ``{"requests": ..., "send_s": ..., "cpu_s": ..., "statuses": {...}}``
(``cpu_s``: this process's user + system time while sending).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import resource
import time
from collections import Counter
from collections.abc import Iterator

import aiohttp
import orjson


async def cancel_all(
    url: str, ids: list[str], sub: str, key: str, workers: int, rate: float | None
) -> Counter[int]:
    statuses: Counter[int] = Counter()
    base = f"{url}/api/v1/subaccounts/{sub}/messages/"
    todo: Iterator[tuple[int, str]] = iter(enumerate(ids))
    loop = asyncio.get_running_loop()
    start = loop.time()
    connector = aiohttp.TCPConnector(limit=workers)
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            for i, umid in todo:  # one shared iterator: each id goes to exactly one worker
                if rate:
                    wait = start + i / rate - loop.time()
                    if wait > 0.001:
                        await asyncio.sleep(wait)
                async with session.delete(base + umid) as resp:
                    orjson.loads(await resp.read())
                    statuses[resp.status] += 1

        await asyncio.gather(*(worker() for _ in range(workers)))
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("csv")
    parser.add_argument("subaccount")
    parser.add_argument("key")
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--rate", type=float, default=None)
    ns = parser.parse_args()
    with open(ns.csv, newline="") as f:
        ids = [row["umid"] for row in csv.DictReader(f)]
    started = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    coro = cancel_all(ns.url, ids, ns.subaccount, ns.key, ns.workers, ns.rate)
    if ns.loop == "uvloop":
        import uvloop

        statuses = uvloop.run(coro)
    else:
        statuses = asyncio.run(coro)
    send_s = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = usage.ru_utime + usage.ru_stime - cpu0
    print(
        json.dumps(
            {
                "requests": sum(statuses.values()),
                "send_s": send_s,
                "cpu_s": cpu_s,
                "statuses": {str(k): v for k, v in sorted(statuses.items())},
            }
        )
    )


if __name__ == "__main__":
    main()
