"""Upload saliency in a child process, away from the server's GIL.

A saliency pass is a few hundred torch calls, each releasing the GIL for its kernel and
taking it back after. In the server, other threads run Python all the time (gRPC's
dispatch, searches, response building), so every take-back waits: on a 2-core CPU a
batch of 4 uploads cost 6.9 ms per sample there against 4.1 ms alone, and a thread that
runs pure Python beside it slows it 80-fold. A spawned child process with its own copy of
the bundle's model computes the batches instead; only the preprocessed images (B, C, H, W)
go in and the raw profiles (B, F) and logits (B, K) come back, a few KB each.

The batch worker talks to the child over one pipe, itself: it writes a batch and blocks
reading the answer with the GIL released. (A ``ProcessPoolExecutor`` moves each batch
through two helper threads each way, and in a busy server every one of those hand-offs
waits for the GIL: measured ~8 ms per batch of 4 on top of the ~16 ms computation.)

The child loads the model from the bundle's :class:`~parasal.indexer.Manifest` (plain data,
pickled to it) like the server does (and refuses to
start when the weights no longer match the recorded fingerprint). When it dies (killed, out of
memory), the batch it held fails with :class:`Unavailable` (clients retry) and a new child
starts for the next one.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import traceback
from typing import TYPE_CHECKING

import numpy as np

from .errors import Unavailable

if TYPE_CHECKING:
    from parasal.indexer import Manifest

__all__ = ["SaliencyProcess"]

log = logging.getLogger("parasal.server")

#: Seconds ``close`` waits for the child to exit after asking it to, before killing it.
_STOP_TIMEOUT_S = 10.0


class SaliencyProcess:
    """One child process computing ``filter_saliency`` batches for one bundle, one batch at
    a time (callers are serialized)."""

    def __init__(self, manifest: Manifest, device: str = "cpu", torch_threads: int = 1):
        self._args = (manifest, device, torch_threads)
        self._lock = threading.Lock()  # one exchange on the pipe at a time
        self._process = None
        self._failed = False  # the child reported it cannot load the model (see settled)
        self._start()

    def _start(self) -> None:
        # spawn, not fork: the parent has gRPC, OpenMP and maybe CUDA state a fork would copy broken.
        context = multiprocessing.get_context("spawn")
        self._conn, child_end = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child_end, *self._args), daemon=True, name="parasal-saliency"
        )
        self._process.start()
        child_end.close()  # the child holds it now; our copy would keep the pipe open after the child dies
        self._ready = False  # the child sends "ready" once its model is loaded

    def wait_ready(self) -> None:
        """Block until the child has loaded its model; raises RuntimeError with the child's
        error when it could not (start-up errors surface here, and the first request is not
        the slow one)."""
        with self._lock:
            try:
                self._ensure_ready()
            except (_ChildDied, OSError) as exc:
                self._stop()
                raise RuntimeError(f"the saliency worker process failed to start: {exc}") from None

    def settled(self) -> bool:
        """Whether :meth:`compute` would start at once: the child has loaded its model (or
        has died; compute then fails its batch and starts another). Never blocks: the
        server listens before its children are ready and computes uploads itself until
        then. A child that could not load its model is given up for good (logged once):
        uploads stay in the server, as with --no-saliency-process."""
        if self._ready:
            return True
        if self._failed or not self._lock.acquire(blocking=False):
            return False  # given up, or another thread is at the pipe
        try:
            if self._process is None or not self._conn.poll():
                return False  # still loading
            try:
                self._ensure_ready()
            except _ChildDied as exc:
                if not exc.reported:
                    return True  # died: compute() says so and starts another
                self._failed = True
                self._stop()
                log.error("the saliency worker process failed to start (%s); uploads are computed in the server", exc)
                return False
            return True
        finally:
            self._lock.release()

    def compute(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw filter saliency (B, F) float32 and logits (B, K) float32 of images ``x``
        (B, C, H, W) float32 with true labels ``y`` (B,) int64. An error raised in the
        child (bad input) is raised here; a dead child raises :class:`Unavailable` and a
        new one starts."""
        with self._lock:
            try:
                self._ensure_ready()
                self._conn.send((x, y))
                status, payload = self._receive()
            except (_ChildDied, OSError) as exc:
                log.error("the saliency worker process stopped (%s); starting a new one", exc)
                self._stop()
                self._start()  # loads its model while the caller retries
                raise Unavailable("the saliency worker process stopped while computing this request; retry") from None
        if status == "error":
            raise payload
        return payload

    def _ensure_ready(self) -> None:
        if self._process is None:
            self._start()
        if not self._ready:
            status, payload = self._receive()
            if status == "failed":
                raise _ChildDied(payload, reported=True)
            self._ready = True

    def _receive(self) -> tuple[str, object]:
        """The child's next (status, payload); _ChildDied when it has gone."""
        try:
            return self._conn.recv()
        except (EOFError, OSError) as exc:
            self._process.join(1.0)
            code = self._process.exitcode
            raise _ChildDied(f"exit code {code}" if code is not None else repr(exc)) from None

    def _stop(self) -> None:
        if self._process is None:
            return
        try:
            self._conn.send(None)  # asks the child to exit
        except OSError:
            pass  # already gone
        if not self._ready:
            self._process.terminate()  # still loading (it reads the pipe only after): nothing to lose
        self._process.join(_STOP_TIMEOUT_S)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()
        self._process = None

    def close(self) -> None:
        with self._lock:
            self._stop()

    @property
    def pid(self) -> int | None:
        """The child's process id (for tests and operators); None between children."""
        return None if self._process is None else self._process.pid


class _ChildDied(Exception):
    """The child exited (or never started); the message says how. ``reported``: it said
    it could not load its model (rather than being killed)."""

    def __init__(self, message: str, reported: bool = False):
        super().__init__(message)
        self.reported = reported


# ---------------------------------------------------------------------------------------
# In the child


def _serve(conn, manifest: Manifest, device: str, torch_threads: int) -> None:
    """The child's loop: load the model, say ready, then answer batches until told to stop
    (None) or the parent goes away (EOF)."""
    try:
        compute = _loader(manifest, device, torch_threads)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        traceback.print_exc()
        return
    conn.send(("ready", None))
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        try:
            answer = ("ok", compute(*request))
        except Exception as exc:  # noqa: BLE001 - raised again in the parent
            answer = ("error", exc)
        try:
            conn.send(answer)
        except Exception as exc:  # noqa: BLE001 - an exception that does not pickle
            conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))


def _loader(manifest: Manifest, device: str, torch_threads: int):
    """Load the model; return the function that computes one batch."""
    import torch

    from parasal.core import filter_saliency
    from parasal.indexer import load_model_from_manifest

    if torch_threads:
        torch.set_num_threads(torch_threads)
    loaded = load_model_from_manifest(manifest)  # ModelMismatch if the weights changed
    model = loaded.model.to(device).eval()
    layout = manifest.layout
    where = torch.device(device)

    def compute(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inputs = torch.from_numpy(x).to(where)  # (B, C, H, W)
        targets = torch.from_numpy(y).to(where)  # (B,)
        raw, logits = filter_saliency(model, inputs, targets, layout=layout, return_logits=True)
        return raw.cpu().numpy(), logits.float().cpu().numpy()  # (B, F), (B, K)

    return compute
