"""Start-up time of ``parasal serve``: a baseline revision and this tree, side by side.

    python benchmarks/serve_startup.py                      # builds a 400-sample resnet18 bundle first
    python benchmarks/serve_startup.py --bundle bundles/r18 --baseline d2b15e8 --repeats 5

Each run starts ``python -m parasal.server --bundle B --port 0`` (a fresh state dir, CPU,
``OMP_NUM_THREADS=1``) and times, from the moment the process is spawned:

* ``model_s``: until the server logs that the bundle's model is loaded (``bundle 'NAME': ...``);
* ``listening_s``: until it prints ``parasal: serving on HOST:PORT`` (what a user waits for).

Then it is stopped with SIGTERM. Baseline and candidate runs alternate (B C B C ...), so
load from other work on the machine falls on both alike; the table gives each one's median
and the ratio. ``--baseline`` and ``--candidate`` take a git revision of this repository
(exported with ``git archive`` into a temporary directory and imported from there) or a
source directory; the candidate defaults to this working tree as installed.

What start-up spends its time on, and what changed (issue #13), is in the module comment
of server/registry.py's ``open_served`` and the README's figures: the upload-saliency child
process (its own torch + torchvision imports and model load) used to start only after the
server had loaded its own copy of the model; it now starts first and loads alongside.

Without ``--bundle`` a bundle is built first (not timed): torchvision resnet18, random
weights (seed 0) saved as a state dict, 10 classes x 40 random 28x28 grey PNGs, indexed at
the data's size. Prints the table, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVING = re.compile(r"^parasal: serving on (\S+)$")
# The log line open_served writes once the bundle's model is loaded and checked.
MODEL_LOADED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO parasal.server: bundle '")
# package -> directory in a source tree (as pyproject.toml's package-dir maps them)
PACKAGES = {
    "core": "core",
    "indexer": "indexer",
    "server": "server",
    "client": "client",
    "demo": "demo",
    "v1": "proto/parasal/v1",
}
#: The last commit before the start-up changes whose server starts (the contract commits
#: after it add ExportEditedModel, which the server implements only later in the session).
DEFAULT_BASELINE = "d2b15e8"


def source_tree(spec: str, scratch: Path) -> Path | None:
    """A PYTHONPATH entry importing ``parasal`` from ``spec`` (a git revision or a source
    directory); None for ``.`` (this tree, as installed)."""
    if spec == ".":
        return None
    src = Path(spec)
    if not src.is_dir():
        src = scratch / f"src-{re.sub(r'[^A-Za-z0-9]', '_', spec)}"
        src.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", spec], capture_output=True, check=True)
        with tarfile.open(fileobj=__import__("io").BytesIO(archive.stdout)) as tar:
            tar.extractall(src, filter="data")
    pkg = scratch / f"pkg-{src.name}" / "parasal"
    pkg.mkdir(parents=True)
    for name, rel in PACKAGES.items():
        if not (src / rel).is_dir():
            raise SystemExit(f"{spec}: no {rel}/ (older layout); pick a revision with proto/parasal/v1/")
        (pkg / name).symlink_to((src / rel).resolve(), target_is_directory=True)
    return pkg.parent


def build_bundle(scratch: Path) -> Path:
    import numpy as np
    import torch
    import torchvision
    from PIL import Image

    data = scratch / "photos"
    rng = np.random.default_rng(0)
    for c in range(10):
        (data / f"c{c}").mkdir(parents=True)
        for i in range(40):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L").save(data / f"c{c}" / f"{i}.png")
    torch.manual_seed(0)
    weights = scratch / "r18.pth"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), weights)
    out = scratch / "bundles" / "r18"
    cmd = [sys.executable, "-m", "parasal.indexer", "--model", "torchvision:resnet18", "--weights", str(weights)]
    cmd += ["--data", str(data), "--out", str(out), "--resize", "none", "--crop", "none", "--no-progress"]
    subprocess.run(cmd + ["--device", "cpu"], check=True, env=_env(None), capture_output=True)
    return out


def _env(pythonpath: Path | None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def one_start(bundle: Path, pythonpath: Path | None, scratch: Path, timeout: float) -> dict:
    """Start a server, time it to the model and to listening, stop it."""
    state = Path(tempfile.mkdtemp(dir=scratch, prefix="state-"))
    log_path = state / "server.log"
    cmd = [sys.executable, "-m", "parasal.server", "--bundle", str(bundle), "--port", "0"]
    cmd += ["--state-dir", str(state / "ops"), "--device", "cpu"]
    with open(log_path, "w") as log:
        spawned_wall, spawned = time.time(), time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=_env(pythonpath))
        listening = None
        try:
            deadline = spawned + timeout
            for line in proc.stdout:
                if SERVING.match(line.strip()):
                    listening = time.perf_counter() - spawned
                    break
                if time.perf_counter() > deadline:
                    break
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    text = log_path.read_text()
    if listening is None:
        raise SystemExit(f"server did not start ({' '.join(cmd)}):\n{text[-3000:]}")
    model = None
    for line in text.splitlines():
        m = MODEL_LOADED.match(line)
        if m:
            model = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() - spawned_wall
            break
    return {"model_s": model, "listening_s": listening}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, help="bundle to serve (default: build a 400-sample resnet18 one)")
    p.add_argument(
        "--baseline", default=DEFAULT_BASELINE, help=f"git revision or source dir (default {DEFAULT_BASELINE})"
    )
    p.add_argument("--candidate", default=".", help="git revision or source dir (default: this working tree)")
    p.add_argument("--repeats", type=int, default=3, help="starts of each (default 3), alternating")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds one start may take")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="serve-startup-") as tmp:
        scratch = Path(tmp)
        bundle = args.bundle or build_bundle(scratch)
        trees = {"baseline": source_tree(args.baseline, scratch), "candidate": source_tree(args.candidate, scratch)}
        runs: dict[str, list[dict]] = {"baseline": [], "candidate": []}
        for i in range(args.repeats):
            for which in ("baseline", "candidate"):
                runs[which].append(one_start(bundle, trees[which], scratch, args.timeout))
                print(f"  {which:9} run {i + 1}: " + _figures(runs[which][-1]), flush=True)

    def median(which: str, key: str) -> float | None:
        values = [r[key] for r in runs[which] if r[key] is not None]
        return statistics.median(values) if values else None

    figures = {"benchmark": "serve_startup", "bundle": str(bundle), "repeats": args.repeats}
    figures.update(baseline=args.baseline, candidate=args.candidate, machine=f"{platform.machine()} x{os.cpu_count()}")
    print(f"\n{'median of ' + str(args.repeats):18} {'baseline':>10} {'candidate':>10} {'ratio':>7}")
    for key in ("model_s", "listening_s"):
        b, c = median("baseline", key), median("candidate", key)
        ratio = c / b if b and c is not None else None
        figures[key] = {
            "baseline": b,
            "candidate": c,
            "ratio": ratio,
            "runs": {w: [r[key] for r in runs[w]] for w in runs},
        }
        print(f"{key:18} {_s(b):>10} {_s(c):>10} {'' if ratio is None else f'{ratio:.2f}':>7}")
    print(json.dumps(figures, allow_nan=False))
    return 0


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _figures(run: dict) -> str:
    return ", ".join(f"{k} {_s(v)}" for k, v in run.items())


if __name__ == "__main__":
    sys.exit(main())
