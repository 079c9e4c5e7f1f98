"""Fault injection for crash tests: run a job in a child process that SIGKILLs itself just
before its Nth file-system mutation (rename, replace, unlink, rmdir, rmtree).

Python-level, so it works wherever the tests run (no strace needed); the child is forked
from a forkserver that has imported torch and the indexer once, so each kill costs
milliseconds, not an interpreter start.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal

#: what a job does to files that a kill between two of them can observe
MUTATIONS = (
    ("os", "replace"),
    ("os", "rename"),
    ("os", "unlink"),
    ("os", "remove"),
    ("os", "rmdir"),
    ("shutil", "rmtree"),
)


def _arm(kill_at: int | str, steps: list[str]) -> None:
    modules = {"os": os, "shutil": shutil}
    for module_name, attr in MUTATIONS:
        module = modules[module_name]
        original = getattr(module, attr)

        def wrapped(*args, _original=original, _name=attr, **kwargs):
            steps.append(f"{_name} {os.path.basename(str(args[0])) if args else ''}")
            if len(steps) == kill_at or (isinstance(kill_at, str) and steps[-1].startswith(kill_at)):
                os.kill(os.getpid(), signal.SIGKILL)
            return _original(*args, **kwargs)

        setattr(module, attr, wrapped)


def _child(kill_at: int | str, steps_file: str, threads: int, job_kwargs: dict) -> None:
    import torch

    from parasal.indexer.pipeline import IndexJob, run_index

    torch.set_num_threads(threads)  # the parent's float reduction order
    steps: list[str] = []
    _arm(kill_at, steps)
    run_index(IndexJob(**job_kwargs))
    with open(steps_file, "w") as f:  # only reached when no kill happened
        json.dump(steps, f)


_CONTEXT = None


def context():
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(["torch", "parasal.indexer.pipeline", "kill_points"])
    return _CONTEXT


def run_killed_at(kill_at: int | str, steps_file: str, threads: int, timeout: float = 120, **job_kwargs) -> int:
    """Run ``IndexJob(**job_kwargs)`` in a child killed just before its mutation number
    ``kill_at`` (1-based; or the first whose "name basename" starts with ``kill_at``, a str;
    0: never, and the child writes the list of its mutations, as "name basename", to
    ``steps_file``). Returns the child's exit code (-SIGKILL when killed)."""
    proc = context().Process(target=_child, args=(kill_at, steps_file, threads, job_kwargs))
    proc.start()
    proc.join(timeout)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
        raise TimeoutError(f"the job killed at step {kill_at} did not finish within {timeout} s")
    return proc.exitcode
