"""What every experiment shares: options, reference sampling, bootstrap CIs, tidy points,
the opened bundle and model (:class:`Context`), progress and cancel.

An experiment is a module with ``NAME``, ``OPTIONS`` (name -> :class:`Option`),
``DEFAULT_CAP`` and ``run(ctx, *, references, seed, options, progress) -> Outcome``.
:mod:`parasal.server.experiments` wraps it into ``run_experiment`` (timing, JSON, plot).

Confidence intervals: 95 % ``scipy.stats.bootstrap`` intervals of the mean, the
*percentile* method (BCa's acceleration is undefined for the 0/1 and constant samples
these experiments produce often), 2000 resamples, the generator seeded from the
experiment's seed and the point's identity, so a run is reproducible point by point.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from parasal.core import Cancelled
from parasal.core._state import eval_copy

from ..errors import FailedPrecondition, InvalidArgument

__all__ = [
    "Option",
    "parse_options",
    "Point",
    "Outcome",
    "Context",
    "Steps",
    "bootstrap_ci",
    "point",
    "sample_ids",
    "mixed_seed",
    "clean",
    "CONFIDENCE",
    "RESAMPLES",
    "CI_METHOD",
]

CONFIDENCE = 0.95
RESAMPLES = 2000
CI_METHOD = "percentile"

ProgressFn = Callable[[float, str], None]
StopFn = Callable[[], bool]


# ---------------------------------------------------------------------------------------
# Options: string -> typed value, unknown keys refused


@dataclass(frozen=True)
class Option:
    kind: str  # "int" | "float" | "ints" | "floats" | "str" | "bool"
    default: object
    help: str
    low: float | None = None  # inclusive bounds for numbers (each entry of a list)
    high: float | None = None

    def parse(self, key: str, text: str):
        try:
            if self.kind in ("ints", "floats"):
                cast = int if self.kind == "ints" else float
                value = tuple(cast(t) for t in text.split(",") if t.strip())
                if not value:
                    raise ValueError("empty list")
                items = value
            elif self.kind == "bool":
                if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError("not a boolean")
                return text.lower() in ("1", "true", "yes")
            elif self.kind == "str":
                return text
            else:
                value = int(text) if self.kind == "int" else float(text)
                items = (value,)
        except ValueError as exc:
            raise InvalidArgument(f"option {key}={text[:80]!r}: expected {self.kind} ({exc})") from None
        for v in items:
            if (
                not math.isfinite(v)
                or (self.low is not None and v < self.low)
                or (self.high is not None and v > self.high)
            ):
                raise InvalidArgument(f"option {key}={text[:80]!r}: each value must lie in [{self.low}, {self.high}]")
        return value


def parse_options(name: str, spec: dict[str, Option], given: dict[str, str] | None) -> dict:
    """Every option of ``spec`` (defaults filled in); InvalidArgument for unknown keys or bad values."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(spec))
    if unknown:
        known = ", ".join(sorted(spec)) or "none"
        raise InvalidArgument(f"experiment {name!r} has no option(s) {', '.join(unknown)[:200]}; known: {known}")
    return {key: (opt.parse(key, given[key]) if key in given else opt.default) for key, opt in spec.items()}


# ---------------------------------------------------------------------------------------
# Tidy points and bootstrap intervals


@dataclass(frozen=True)
class Point:
    """One row of an experiment's tidy table (the proto's ExperimentPoint plus free fields)."""

    selection: str
    count: int
    metric: str
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {
            "selection": self.selection,
            "count": self.count,
            "metric": self.metric,
            "mean": self.mean,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n": self.n,
        }
        out.update(self.extra)
        return clean(out)


@dataclass
class Outcome:
    """What an experiment's ``run`` returns: its points, extra JSON fields and plot."""

    references: int
    points: list[Point]
    extra: dict = field(default_factory=dict)
    plot_png: bytes = b""


def mixed_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from ``seed`` and any identifying parts (a reference id, a point's name):
    different parts give independent streams, the same parts the same stream."""
    text = "\x1f".join(str(p) for p in (int(seed), *parts)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def bootstrap_ci(values, seed: int, *parts: object) -> tuple[float | None, float | None, float | None, int]:
    """(mean, ci_low, ci_high, n) of the finite ``values``: the 95 % percentile bootstrap
    interval of the mean; a constant sample has a zero-width interval, one value none (None)."""
    from scipy.stats import bootstrap

    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return None, None, None, 0
    mean = float(x.mean())
    if n == 1:
        return mean, None, None, 1
    if np.all(x == x[0]):
        return mean, mean, mean, n
    rng = np.random.default_rng(mixed_seed(seed, "bootstrap", *parts))
    res = bootstrap(
        (x,),
        np.mean,
        confidence_level=CONFIDENCE,
        n_resamples=RESAMPLES,
        method=CI_METHOD,
        vectorized=True,
        random_state=rng,
    )
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high), n


def point(selection: str, count: int, metric: str, values, seed: int, **extra) -> Point:
    """A :class:`Point` of ``values`` (one per reference) with its bootstrap interval."""
    mean, low, high, n = bootstrap_ci(values, seed, selection, count, metric, *sorted(extra.items()))
    return Point(selection, int(count), metric, mean, low, high, n, extra)


def clean(value):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python, recursively."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    return value


def dumps(document: dict) -> str:
    return json.dumps(clean(document), allow_nan=False, indent=1)


# ---------------------------------------------------------------------------------------
# Sampling


def sample_ids(candidates: np.ndarray, requested: int, cap: int, seed: int, what: str) -> np.ndarray:
    """``requested`` (0: ``min(cap, all)``) of ``candidates`` drawn without replacement with
    the seed, in id order; FailedPrecondition when there are none, InvalidArgument when more
    are asked than exist."""
    candidates = np.asarray(candidates, dtype=np.int64)
    if len(candidates) == 0:
        raise FailedPrecondition(f"the bundle has no {what}: nothing to run the experiment on")
    if requested < 0:
        raise InvalidArgument(f"references must be >= 0, got {requested}")
    if requested > len(candidates):
        raise InvalidArgument(f"references {requested} exceeds the bundle's {len(candidates)} {what}")
    n = requested or min(cap, len(candidates))
    if n >= len(candidates):
        return np.sort(candidates)
    rng = np.random.default_rng(mixed_seed(seed, "references"))
    return np.sort(rng.choice(candidates, size=n, replace=False))


# ---------------------------------------------------------------------------------------
# Progress and cancel


class Steps:
    """``progress(done / total, message)`` after each step; ``should_stop`` polled before."""

    def __init__(self, total: int, progress: ProgressFn | None, should_stop: StopFn | None, start=0.0, share=1.0):
        self.total, self.done = max(1, int(total)), 0
        self.progress, self.should_stop = progress, should_stop
        self.start, self.share = start, share

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled(f"experiment cancelled after {self.done} of {self.total} steps")

    def step(self, message: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.start + self.share * min(1.0, self.done / self.total), message)

    def head(self, share: float):
        """A progress callback for work before the first step (e.g. the shared forward pass),
        mapped onto the first ``share`` of this range."""
        if self.progress is None:
            return None
        return lambda fraction, message: self.progress(self.start + self.share * share * fraction, message)

    def sub(self, share: float, total: int) -> Steps:
        """A child covering the next ``share`` of this one's range (for an evaluation's own 0..1)."""
        here = self.start + self.share * min(1.0, self.done / self.total)
        return Steps(total, self.progress, self.should_stop, start=here, share=self.share * share)


# ---------------------------------------------------------------------------------------
# The bundle and model an experiment runs on


class Context:
    """One opened bundle and a private eval-mode copy of its model, plus the per-sample
    quantities several experiments need, computed once (all rows: logits, penultimate
    features)."""

    def __init__(self, bundle, model: torch.nn.Module, *, should_stop: StopFn | None = None, batch_size: int = 256):
        self.bundle = bundle
        self.model = eval_copy(model)  # never the caller's: hooks and flags change on this one
        self.layout = bundle.layout
        self.stats = bundle.stats
        self.preprocessing = bundle.preprocessing
        self.should_stop = should_stop
        self.batch_size = batch_size
        self._rows: dict[str, np.ndarray] | None = None

    # -- images ------------------------------------------------------------------------

    def image(self, sample_id: int) -> torch.Tensor:
        """(C, H, W) the sample's model input."""
        return self.preprocessing(self.bundle.load_image(int(sample_id)))

    def images(self, ids: Sequence[int]) -> torch.Tensor:
        """(n, C, H, W) model inputs; polls should_stop every batch."""
        out = []
        for a in range(0, len(ids), self.batch_size):
            self.check()
            out += [self.image(int(i)) for i in ids[a : a + self.batch_size]]
        if not out:
            return torch.zeros(0)
        return torch.stack(out)

    def labels(self, ids: Sequence[int]) -> np.ndarray:
        return self.bundle.labels[self.bundle.rows_of(ids)].astype(np.int64)

    def predicted(self, ids: Sequence[int]) -> np.ndarray:
        return self.bundle.predicted[self.bundle.rows_of(ids)].astype(np.int64)

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("experiment cancelled")

    @property
    def ids(self) -> np.ndarray:
        return np.asarray(self.bundle.ids, dtype=np.int64)

    @property
    def misclassified_ids(self) -> np.ndarray:
        return self.ids[~np.asarray(self.bundle.correct, bool)]

    @property
    def correct_ids(self) -> np.ndarray:
        return self.ids[np.asarray(self.bundle.correct, bool)]

    # -- every row at once -------------------------------------------------------------

    def rows(self, progress: ProgressFn | None = None) -> dict[str, np.ndarray]:
        """Per bundle row: ``logits`` (N, K) float32 and ``features`` (N, D) float32 (the
        input of the model's last ``nn.Linear``: the penultimate representation). Computed
        once per context, in batches."""
        if self._rows is not None:
            return self._rows
        linear = [m for m in self.model.modules() if isinstance(m, torch.nn.Linear)]
        if not linear:
            raise FailedPrecondition("the model has no nn.Linear layer: no penultimate features to compare with")
        captured: list[torch.Tensor] = []
        handle = linear[-1].register_forward_pre_hook(lambda mod, args: captured.append(args[0].detach().flatten(1)))
        logits, features = [], []
        ids = self.ids
        try:
            for a in range(0, len(ids), self.batch_size):
                x = self.images(ids[a : a + self.batch_size])
                captured.clear()
                with torch.no_grad():
                    logits.append(self.model(x).float().cpu().numpy())
                features.append(captured[-1].float().cpu().numpy())
                if progress is not None:
                    progress(min(1.0, (a + len(x)) / len(ids)), "forward pass over the bundle")
        finally:
            handle.remove()
        self._rows = {"logits": np.concatenate(logits), "features": np.concatenate(features)}
        return self._rows
