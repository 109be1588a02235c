"""The ``bulk-cancel`` commands, one function each: parsed arguments in, an exit code out.

Each is glue: settings from the flags, a call into the library, printing. ``run`` is
:func:`bulk_cancel.api.run` for each input of the job, under the command's
:class:`~.process.ProcessOwner`. Heavy imports (pandas, pyarrow, the HTTP client) happen inside
the commands, so that ``--help`` stays quick.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ExitCode
from .printing import Voice, json_mode, print_plan, print_plans, tell
from .process import ProcessOwner, ask, run_async
from .shell import next_steps

if TYPE_CHECKING:
    from ..api import RunResult
    from ..config import ResolvedSettings
    from ..settings import RunSettings


def run(ns: argparse.Namespace) -> int:
    """``bulk-cancel run``: every input of the job through :func:`bulk_cancel.api.run`."""
    from .. import api, logs
    from ..jobs import plan_runs, run_job
    from ..settings import API_KEY_ENV, url_secrets

    job = settings_from_args(ns)
    voice: Voice = ns.voice
    voice.json = json_mode(job["log_format"])  # a job or config file may have set it
    json_logs = {"auto": None, "json": True, "console": False}[job["log_format"]]
    if job["dry_run"]:
        logs.configure(json=json_logs)
        return print_plans(
            plan_runs(job), several=job["archive_dir"] is not None, owner=ProcessOwner()
        )
    key = api.checked_key(
        os.environ.get(API_KEY_ENV, ""),
        missing=f"no API key: export {API_KEY_ENV}=<your key from the 8x8 Connect portal>",
        unsafe=f"{API_KEY_ENV} holds a line break, control or non-ASCII character; "
        "set it to the key alone",
    )
    tty = sys.stderr.isatty()
    # On a terminal the progress bar and the summary table tell the story; logs only warn.
    # In JSON mode stderr carries JSON alone: progress and the summary come as events.
    logs.configure(
        secrets=[key, *url_secrets(job["proxy"])],  # the proxy's password is as secret
        json=json_logs,
        level="warning" if tty and job["log_format"] == "auto" else "info",
    )
    owner = ProcessOwner(
        progress_bar=tty and not voice.json,
        # Ask only a person: stdin and stderr both on a terminal; cron and pipes are never asked.
        confirm=ask if tty and sys.stdin.isatty() and not job["yes"] else None,
    )

    async def run_one(settings: RunSettings) -> RunResult:
        result = await api.run(settings, key, owner=owner, next_steps=next_steps(settings))
        tell(settings, result, tty=tty, events=voice.json)
        return result

    return int(run_async(lambda: run_job(job, run_one)))


def settings_from_args(ns: argparse.Namespace) -> ResolvedSettings:
    """The effective settings of ``run`` or ``config show``: flags > ``BULK_CANCEL_*`` > job
    file > config file > defaults."""
    from .. import config

    flags = {s.name: getattr(ns, s.name) for s in config.SETTINGS if hasattr(ns, s.name)}
    config_file = getattr(ns, "config", None) or config.default_config_file(os.environ)
    job = Path(ns.job) if hasattr(ns, "job") else None
    return config.resolve(flags, os.environ, job, config_file)


def config_show(ns: argparse.Namespace) -> int:
    """Each effective setting, its value and where it came from; the key only as set or not."""
    import json

    from ..config import mask_key, show_data, show_rows
    from ..settings import API_KEY_ENV

    job = settings_from_args(ns)
    key = os.environ.get(API_KEY_ENV, "").strip()
    key_row = (API_KEY_ENV, mask_key(key), f"env {API_KEY_ENV}")
    if ns.format == "json":
        data = show_data(job)
        data[API_KEY_ENV] = {"value": key_row[1], "source": key_row[2]}
        print(json.dumps(data, indent=2))
        return int(ExitCode.OK)
    rows = [*show_rows(job), key_row]
    print(f"# config file: {job.config_file or 'none'}")
    print(f"# job file: {job.job_file or 'none'}")
    width = max(len(name) for name, _, _ in rows)
    value_width = min(48, max(len(v) for _, v, _ in rows))
    for name, value, source in rows:
        print(f"{name:<{width}}  {value:<{value_width}}  {source}")
    return int(ExitCode.OK)


def validate(ns: argparse.Namespace) -> int:
    """``bulk-cancel validate FILE``: a dry run of the input flags alone."""
    from .. import logs
    from ..settings import RunSettings, check_subaccount

    if ns.subaccount is not None:
        check_subaccount(ns.subaccount)
    logs.configure(json=None, level="warning")
    settings = RunSettings(
        input=ns.input,
        output=Path("validate.csv"),
        subaccount=ns.subaccount,
        column=ns.column,
        subaccount_column=ns.subaccount_column,
        sheet=ns.sheet,
        header_row=ns.header_row,
        encoding=ns.encoding,
        max_rows=ns.max_rows,
    )
    return print_plan(settings, ns.format, owner=ProcessOwner())


def report(ns: argparse.Namespace) -> int:
    """``bulk-cancel report``: a past run's summary, and a breakdown ``--by`` a column."""
    import json

    from ..display import breakdown_table, load_breakdown, load_summary, summary_table

    summary = load_summary(ns.path)
    breakdown = load_breakdown(ns.path, ns.by) if ns.by else None
    if ns.format == "json":
        data = summary.to_dict()
        print(json.dumps(data if breakdown is None else {**data, "breakdown": breakdown}, indent=2))
    else:
        summary_table(summary, sys.stdout, tty=sys.stdout.isatty())
        if breakdown is not None:
            breakdown_table(breakdown, sys.stdout)
    return int(ExitCode.OK)


def merge(ns: argparse.Namespace) -> int:
    """``bulk-cancel merge``: the shards' results as one file and one summary."""
    import json

    from ..display import summary_table
    from ..merge import merge as merge_shards

    summary = merge_shards(ns.output, ns.results)
    if ns.format == "json":
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        summary_table(summary, sys.stdout, tty=sys.stdout.isatty())
    return summary.exit_code


def simulate(ns: argparse.Namespace) -> int:
    """``bulk-cancel simulate``: serve the local stand-in of 8x8's API until stopped."""
    from .. import simulator

    config = simulator.config_from_args(ns)
    run_async(lambda: simulator.serve(config, host=ns.host, port=ns.port, state_file=ns.state_file))
    return 0
