"""deploy/ stays valid: Kubernetes manifests against the API schemas, compose and Dockerfile sanity."""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_strictly(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs, f"{path} is empty"
    for doc in docs:
        # Raises ValidationError naming the field on any schema violation or unknown field.
        kubernetes_validate.validate(doc, "1.31", strict=True)


def test_server_uses_native_grpc_probes_and_read_only_bundles():
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "server.yaml").read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == container["ports"][0]["containerPort"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["bundles"].get("readOnly") is True


def test_index_job_ranks_match_completions():
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "index-job.yaml").read_text()))
    job = next(d for d in docs if d["kind"] == "Job")
    args = " ".join(job["spec"]["template"]["spec"]["containers"][0]["args"])
    assert job["spec"]["completionMode"] == "Indexed"
    assert f"--nnodes={job['spec']['completions']}" in args
    assert "--node-rank=$JOB_COMPLETION_INDEX" in args
    assert (
        job["spec"]["template"]["spec"]["subdomain"]
        == next(d for d in docs if d["kind"] == "Service")["metadata"]["name"]
    )


def test_dockerfile_copies_existing_paths_and_compose_parses():
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for src in line.split()[1:-1]:
                assert (DEPLOY.parent / src).exists(), f"Dockerfile copies missing {src}"
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert {"index", "serve"} <= set(compose["services"])
