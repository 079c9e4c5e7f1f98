"""The README's "Using it" section, run word for word on a user's own model (issue #13).

Its fenced ``sh``/``bash`` blocks are cut into commands (backslash continuations joined,
comment lines dropped) and run one by one with bash, in a folder holding what the section
says the user has: ``resnet18.pth`` (a torchvision resnet18 state dict with random weights,
2 classes, saved with torch.save: nothing is downloaded), ``photos/`` (2 classes x 6 RGB
64x64 PNGs and a grayscale one) and ``classes.txt`` (the model's class order, dog before
cat: not the sorted folder order). Its ``python`` blocks run the same way.

Substituted are only the placeholders the section documents: the port 50051 of ``parasal
serve`` becomes 0 (a free one, read from the line the server prints), the CLI is pointed at
that address through ``$PARASAL_TARGET`` and the SDK snippet's ``127.0.0.1:50051`` becomes
it. ``parasal serve`` runs in the background ("leave it running"); every other command must
exit 0, and what each is for is checked in its output.

The section is read from README.md; ``$PARASAL_README`` names another file to read it from
(a corrected section waiting to be merged).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # indexes and serves a resnet18 at 224 px on CPU: ~1-2 min

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Using it"
PORT = "50051"  # the section's documented port / address placeholders
ADDRESS = f"127.0.0.1:{PORT}"
SERVING = re.compile(r"^parasal: serving on (\S+)$")
STARTUP_TIMEOUT_S = 300
COMMAND_TIMEOUT_S = 300


def section_text() -> str:
    """The "Using it" section: from its heading to the next level-2 heading."""
    source = Path(os.environ.get("PARASAL_README") or README)
    text = source.read_text()
    start = text.index(f"\n{SECTION}\n") + 1
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else len(text)]


def fenced_blocks(section: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```", section, re.M | re.S)]


def shell_commands(body: str) -> list[str]:
    """One string per command: continuation lines joined, comment-only and blank lines dropped
    (trailing comments stay: bash reads them as comments)."""
    joined = re.sub(r"[ \t]*\\\n\s*", " ", body)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_the_sections_own_text_is_what_is_run():
    """The extraction itself, on a made-up section (so a README that stops parsing fails here)."""
    section = "## Using it\n\n```sh\n# c\na --x 1 \\\n   --y 2   # why\n\nb\n```\n\n```python\nprint(1)\n```\n"
    blocks = fenced_blocks(section)
    assert [lang for lang, _ in blocks] == ["sh", "python"]
    assert shell_commands(blocks[0][1]) == ["a --x 1 --y 2   # why", "b"]


@pytest.fixture(scope="module")
def users_folder(tmp_path_factory) -> Path:
    """What the section says the user has, and nothing else."""
    torchvision = pytest.importorskip("torchvision")
    import torch

    root = tmp_path_factory.mktemp("user")
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / "photos" / cls).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "photos" / cls / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), "L").save(root / "photos" / "dog" / "grey.png")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), root / "resnet18.pth")
    (root / "classes.txt").write_text("dog\ncat\n")
    return root


def _env(home: Path, target: str | None = None) -> dict:
    env = dict(os.environ, HOME=str(home), OMP_NUM_THREADS="1")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for name in ("PARASAL_STATE_DIR", "PARASAL_TARGET", "PARASAL_TOKEN", "PARASAL_TOKEN_FILE"):
        env.pop(name, None)  # the reader's shell, not this test's
    if target:
        env["PARASAL_TARGET"] = target
    return env


def _start_server(command: str, cwd: Path, env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    assert f"--port {PORT}" in command, f"the documented placeholder --port {PORT} is missing: {command}"
    command = command.replace(f"--port {PORT}", "--port 0")
    with open(log, "w") as err:
        proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err)
    for raw in proc.stdout:
        match = SERVING.match(raw.decode().strip())
        if match:
            return proc, match.group(1)
    proc.wait(10)
    raise AssertionError(f"`{command}` exited ({proc.returncode}) without serving:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_using_it_runs_word_for_word_on_a_resnet18_state_dict(users_folder, tmp_path):
    blocks = fenced_blocks(section_text())
    shell = [c for lang, body in blocks if lang in ("sh", "bash") for c in shell_commands(body)]
    python = [body for lang, body in blocks if lang == "python"]
    assert any(c.startswith("parasal serve") for c in shell) and python, "the section lost its walkthrough"
    home = tmp_path / "home"
    home.mkdir()
    server, target, outputs = None, None, []
    try:
        for command in shell:
            words = shlex.split(command, comments=True)
            if words[:2] == ["parasal", "serve"]:
                server, target = _start_server(command, users_folder, _env(home), tmp_path / "server.log")
                continue
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=users_folder,
                env=_env(home, target),
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
            )
            assert done.returncode == 0, (
                f"`{command}` failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
            )
            outputs.append((words, done.stdout, done.stderr))
        for body in python:
            assert ADDRESS in body, f"the documented placeholder {ADDRESS} is missing from the SDK snippet"
            done = subprocess.run(
                [sys.executable, "-c", body.replace(ADDRESS, target)],
                cwd=users_folder,
                env=_env(home),
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
            )
            assert done.returncode == 0, f"the SDK snippet failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
            outputs.append((["python"], done.stdout, done.stderr))
    finally:
        if server is not None:
            _stop(server)
    _check_what_each_command_is_for(outputs, users_folder)


def _check_what_each_command_is_for(outputs, folder: Path) -> None:
    by_command = {}
    for words, out, err in outputs:
        by_command.setdefault(" ".join(words[:2]), []).append((words, out, err))
    index_words, _, index_err = by_command["parasal index"][0]
    assert "classes (--classes): 0 dog, 1 cat" in index_err  # the model's order, not the folders'
    assert (folder / index_words[index_words.index("--out") + 1] / "CURRENT").is_file()
    assert "classes  0:dog, 1:cat" in by_command["parasal info"][0][1]
    for words, _out, _ in by_command.get("parasal sample", []):
        if "--image-out" in words:
            assert Image.open(folder / words[words.index("--image-out") + 1]).size == (64, 64)
    for words, out, _ in by_command.get("parasal explain", []):
        overlay = Image.open(folder / words[words.index("--out") + 1])
        assert min(overlay.size) >= 256 and "overlay written" in out
    for _words, out, _ in by_command.get("parasal similar", []):
        assert "rank" in out and "similarity" in out
    for _words, out, _ in by_command.get("parasal eval", []):
        assert "succeeded" in out and "most" in out
    assert "whole_network" in by_command["python"][0][1] or "FinetuneRow" in by_command["python"][0][1]
