"""The Kubernetes example and the container image definition: valid, and consistent with the CLI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from bulk_cancel.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def _container(job: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_the_kubernetes_schema(path: Path) -> None:
    """Each manifest is a valid Kubernetes resource (strict: no unknown fields)."""
    kubernetes_validate.validate(_load(path), kubernetes_validate.latest_version(), strict=True)


def test_the_shard_job_is_indexed_and_runs_one_shard_per_index() -> None:
    """completions = parallelism = N, --shard $(JOB_COMPLETION_INDEX)/N, and the args parse."""
    job = _load(DEPLOY / "job.yaml")
    spec = job["spec"]
    n = spec["completions"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == n
    assert spec["backoffLimitPerIndex"] >= 1
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    container = _container(job)
    env = {e["name"]: e for e in container["env"]}
    assert env["EIGHTX8_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert "JOB_COMPLETION_INDEX" in env
    args = container["args"]
    assert args[args.index("--shard") + 1] == f"$(JOB_COMPLETION_INDEX)/{n}"
    assert "--resume=auto" in args
    for k in range(n):
        concrete = [a.replace("$(JOB_COMPLETION_INDEX)", str(k)) for a in args]
        ns = build_parser().parse_args(concrete)
        assert ns.shard == f"{k}/{n}" and ns.resume == "auto"
        assert ns.output == Path(f"/data/out/shard-{k}.csv")


def test_the_merge_job_merges_every_shard_the_indexed_job_writes() -> None:
    """The merge step lists exactly the N results files the shards write, and its args parse."""
    shards = _load(DEPLOY / "job.yaml")
    n = shards["spec"]["completions"]
    pattern = shards["spec"]["template"]["spec"]["containers"][0]["args"]
    output = pattern[pattern.index("--output") + 1]
    expected = [Path(output.replace("$(JOB_COMPLETION_INDEX)", str(k))) for k in range(n)]
    args = _container(_load(DEPLOY / "merge-job.yaml"))["args"]
    ns = build_parser().parse_args(args)
    assert ns.command == "merge" and ns.results == expected


def test_every_pod_mounts_the_shared_claim() -> None:
    """Shards and merge mount the claim pvc.yaml defines, read-write-many."""
    claim = _load(DEPLOY / "pvc.yaml")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for name in ("job.yaml", "merge-job.yaml"):
        volumes = _load(DEPLOY / name)["spec"]["template"]["spec"]["volumes"]
        claims = [
            v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v
        ]
        assert claims == [claim["metadata"]["name"]]


def test_the_dockerfile_copies_files_that_exist_and_runs_unprivileged() -> None:
    """Every COPY source exists in the repository, and the image does not run as root."""
    text = (ROOT / "Dockerfile").read_text()
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        *sources, _ = line.split()
        for source in sources:
            assert list(ROOT.glob(source)), source
    assert re.search(r"^USER 10001$", text, re.M)
    assert 'ENTRYPOINT ["bulk-cancel"]' in text
