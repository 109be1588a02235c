"""Imports point inward: no cycles, and no module imports one from its own layer or above.

The graph is read from the source with ``ast``, every import statement included: those inside
functions (the lazy imports that keep ``--help`` cheap) and under ``TYPE_CHECKING`` point the
same way as the rest.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import bulk_cancel

PACKAGE = Path(bulk_cancel.__file__).resolve().parent

#: The package's modules (a sub-package counts as one), innermost first. A module may import
#: from the layers before its own, never from its own layer or one after it.
LAYERS: tuple[tuple[str, ...], ...] = (
    # Values, errors and small tools that import nothing of ours.
    ("errors", "model", "normalize", "shard", "locks", "logs", "dedupe"),
    # One concern each, over the values: judging, pacing, SQLite, input files, output files,
    # and the 8x8 stand-in.
    ("policy", "pacing", "ledger", "readers", "writers", "simulator"),
    # RunSettings and their checks (the retry policy's defaults, the shard).
    ("settings",),
    # The HTTP client (it masks proxy URLs as settings does), and the pipeline, which sends
    # through the model's Canceller protocol and so does not import the client.
    ("client", "pipeline"),
    # What runs beside the pipeline: reading into the ledger, progress and summaries, merging.
    ("ingest", "display", "merge"),
    # Settings from flags, environment and files.
    ("config",),
    # One run, start to finish.
    ("runner",),
    # A job's runs.
    ("jobs",),
    # The library: the core every run goes through (``api.run``), and DataFrames in and out.
    ("api",),
    # The package's public names (``bulk_cancel.cancel``, the errors, ``Summary``), loaded lazily.
    ("__init__",),
    # The edges: the command line (cli/, built on ``api.run``) and the demo.
    ("cli", "demo"),
    # `python -m bulk_cancel`.
    ("__main__",),
)

#: Imports between two modules of one layer, each with the reason it is allowed. None today.
SIDEWAYS: frozenset[tuple[str, str]] = frozenset()


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (dotted names, ``bulk_cancel.x.y``)."""
    files = {_module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            found: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    found.append(submodule if submodule in files else source)
            elif isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            graph[name].update(
                f for f in found if f.split(".")[0] == "bulk_cancel" and f != name and f in files
            )
    return graph


def unit(module: str) -> str:
    """The layer entry a module belongs to: ``bulk_cancel.readers.rows`` -> ``readers``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(name: str) -> int:
    for index, names in enumerate(LAYERS):
        if name in names:
            return index
    raise LookupError(name)


def wrong_way(graph: dict[str, set[str]]) -> list[str]:
    """Each import that points sideways (not listed in SIDEWAYS) or outward, as one line."""
    found = []
    for module, imported in sorted(graph.items()):
        for target in sorted(imported):
            a, b = unit(module), unit(target)
            if a == b or (a, b) in SIDEWAYS:
                continue
            if layer_of(b) >= layer_of(a):
                found.append(f"{module} imports {target} ({a} is not above {b})")
    return found


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle between modules, or None."""
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


def test_every_module_has_a_layer() -> None:
    """Each module and sub-package of bulk_cancel is placed in exactly one layer."""
    listed = [name for names in LAYERS for name in names]
    assert len(listed) == len(set(listed))
    assert {unit(m) for m in import_graph()} <= set(listed)


def test_no_import_cycles() -> None:
    """No module imports itself through others, lazy imports inside functions included."""
    assert cycle(import_graph()) is None


def test_imports_point_inward() -> None:
    """A module imports only from the layers below its own (the policy does not import the HTTP
    client, the readers know nothing above them)."""
    assert wrong_way(import_graph()) == []


def test_the_checks_see_a_wrong_way_import_and_a_cycle(tmp_path: Path) -> None:
    """A policy that imports the client, which imports the settings, which import the policy
    (the layout before the types moved to the model) is caught twice: outward and a cycle."""
    package = tmp_path / "bulk_cancel"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "policy.py").write_text("from .client import Exchange\n")
    (package / "client.py").write_text("def f():\n    from .settings import mask_url\n")
    (package / "settings.py").write_text("from . import policy\n")
    graph = import_graph(package)
    assert wrong_way(graph) == [
        "bulk_cancel.policy imports bulk_cancel.client (policy is not above client)"
    ]
    found = cycle(graph)
    assert found is not None and set(found) == {
        "bulk_cancel.policy",
        "bulk_cancel.client",
        "bulk_cancel.settings",
    }


@pytest.mark.parametrize("name", ["readers", "config", "simulator"])
def test_a_sub_package_counts_as_one_module(name: str) -> None:
    """Imports between the modules of one sub-package are its own affair; imports out of it are
    checked like any other."""
    graph = import_graph()
    inside = [m for m in graph if unit(m) == name]
    assert len(inside) > 1
    assert any(unit(t) != name for m in inside for t in graph[m])


def test_the_command_runs_through_the_library() -> None:
    """`bulk-cancel run` is the library's `api.run` under the command's owner: the cli package
    imports the api and none of what makes or drives a run (runner, pipeline, client, ingest,
    ledger), and api is the only module that makes a Runner."""
    graph = import_graph()
    from_cli = {target for module in graph if unit(module) == "cli" for target in graph[module]}
    assert "bulk_cancel.api" in from_cli
    assert {unit(t) for t in from_cli} & {
        "runner",
        "pipeline",
        "client",
        "ingest",
        "ledger",
    } == set()
    makers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Call) and _called(node) == "Runner":
                makers.add(_module_name(path, PACKAGE))
    assert makers == {"bulk_cancel.api"}


#: Calls that act on the whole process: its signal handlers, its exit, its collector, its
#: logging. Only the command (and the simulator serving as a process) may make them.
PROCESS_CALLS = frozenset(
    {
        "signal.signal",
        "add_signal_handler",
        "os._exit",
        "sys.exit",
        "gc.freeze",
        "structlog.configure",
        "logging.basicConfig",
        "logs.configure",
    }
)


def test_the_library_leaves_the_process_alone() -> None:
    """Nothing the library imports, directly or through others, installs a signal handler,
    exits, freezes the collector or configures logging: those belong to the command."""
    graph = import_graph()
    reached, todo = set(), ["bulk_cancel.api"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph[module])
    assert {"bulk_cancel.runner", "bulk_cancel.pipeline", "bulk_cancel.client"} <= reached
    files = {_module_name(p, PACKAGE): p for p in PACKAGE.rglob("*.py")}
    found = []
    for module in sorted(reached):
        tree = ast.parse(files[module].read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _acts_on_the_process(_called(node)):
                found.append(f"{module}:{node.lineno} {_called(node)}")
    assert found == []


def _called(call: ast.Call) -> str:
    """What a call calls, as written: ``Runner``, ``signal.signal``, ``loop.add_signal_handler``."""
    parts = []
    func = call.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _acts_on_the_process(name: str) -> bool:
    """*name* is one of PROCESS_CALLS, a bare one (``add_signal_handler``) on any object."""
    return any(name == c or ("." not in c and name.endswith("." + c)) for c in PROCESS_CALLS)
