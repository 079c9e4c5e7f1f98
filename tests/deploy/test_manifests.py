"""deploy/ stays valid: Kubernetes manifests against the API schemas, compose and Dockerfile sanity."""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# Kubernetes API objects; kustomization.yaml is kustomize's own file, checked on its own below.
MANIFESTS = sorted(p for p in (DEPLOY / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")


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


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if d]


def _pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def _workloads() -> dict[str, dict]:
    return {
        d["kind"]: d
        for name in ("index-job.yaml", "server.yaml")
        for d in _docs(name)
        if d["kind"] in ("Job", "Deployment")
    }


def _flag(args: list[str], flag: str) -> str:
    words = " ".join(args).split()
    return words[words.index(flag) + 1]


def test_k8s_story_is_one_consistent_index_job_to_server_path():
    """The index Job writes the bundle the server serves, on a volume both mount, with the
    weights mounted at the path the bundle's manifest records; every claim is defined."""
    claims = {d["metadata"]["name"]: d for d in _docs("storage.yaml") if d["kind"] == "PersistentVolumeClaim"}
    work = _workloads()
    job, server = work["Job"], work["Deployment"]
    for workload in (job, server):
        for volume in _pod_spec(workload)["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, volume
    for claim in claims.values():
        if "ReadWriteMany" in claim["spec"]["accessModes"]:
            assert claim["spec"].get("storageClassName"), f"{claim['metadata']['name']} names no storage class"

    job_c, server_c = _pod_spec(job)["containers"][0], _pod_spec(server)["containers"][0]
    out, served = _flag(job_c["args"], "--out"), _flag(server_c["args"], "--bundle")
    assert served == out

    def claim_at(workload, container, path):
        mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/"))
        volume = next(v for v in _pod_spec(workload)["volumes"] if v["name"] == mount["name"])
        return volume["persistentVolumeClaim"]["claimName"]

    assert claim_at(job, job_c, out) == claim_at(server, server_c, served)
    weights = _flag(job_c["args"], "--weights")
    assert claim_at(job, job_c, weights) == claim_at(server, server_c, weights)


def test_k8s_index_job_bounds_the_barrier_wait():
    job_c = _pod_spec(_workloads()["Job"])["containers"][0]
    assert float(_flag(job_c["args"], "--dist-timeout")) <= 3600


def test_kustomization_lists_every_manifest_and_rewrites_the_image():
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS)
    (image,) = kustomization["images"]
    assert "/" in image["newName"], "the image needs a registry placeholder"
    for workload in _workloads().values():
        for container in _pod_spec(workload)["containers"]:
            assert container["image"].split(":")[0] == image["name"]


def _dockerfile_build_copies() -> list[str]:
    """The source paths the Dockerfile's build stage copies into the build context."""
    paths = []
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM ") and paths:
            break  # the runtime stage copies from the build stage only
        if line.startswith("COPY ") and "--from" not in line:
            paths += line.split()[1:-1]
    return paths


def test_dockerfile_creates_its_writable_directories_for_its_user():
    """Fresh named volumes copy the image directory's owner: every path compose and the
    server pod mount read-write must exist in the image, owned by the USER."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    user = next(line.split()[1] for line in text.splitlines() if line.startswith("USER "))
    run = next(line for line in text.splitlines() if line.startswith("RUN ") and "mkdir -p" in line)
    made = run.split("mkdir -p", 1)[1].split("&&")[0].split()
    owned = run.split(f"chown -R {user}:{user}", 1)[1].split("&&")[0].split()
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mounts = {v.split(":")[1] for s in compose["services"].values() for v in s.get("volumes", [])}
    server_c = _pod_spec(_workloads()["Deployment"])["containers"][0]
    mounts |= {m["mountPath"] for m in server_c["volumeMounts"] if not m.get("readOnly")}
    for directory in mounts:
        assert directory in made, f"{directory} is not created in the image"
        assert any(directory == o or directory.startswith(o.rstrip("/") + "/") for o in owned), directory


@pytest.mark.slow
def test_wheel_builds_from_exactly_the_files_the_dockerfile_copies(tmp_path):
    """`pip wheel` over a context holding only what the Dockerfile copies: a package
    directory pyproject declares but the Dockerfile forgets fails here, not in a build."""
    import shutil
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    for rel in _dockerfile_build_copies():
        origin = DEPLOY.parent / rel
        if origin.is_dir():
            shutil.copytree(origin, src / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, src / rel)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("parasal-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "parasal/core/saliency.py",
        "parasal/server/app.py",
        "parasal/client/cli.py",
        "parasal/demo/run.py",
        "parasal/v1/saliency_pb2.py",
        "parasal/v1/saliency_pb2_grpc.py",
        "parasal/indexer/weights/demo-fashion.pt",
    ):
        assert expected in names, f"{expected} missing from the wheel"
