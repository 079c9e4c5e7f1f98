"""Test helpers of the dashboard tests (imported by name: this folder is on sys.path).

- `FakeClient`: the SDK's methods answering from a small in-memory dataset (real SDK types
  from `parasal.client.types` where they exist, plain objects with the contract's attribute
  names for the newer answers), recording every call; for fast app tests with TestClient.
- `e2e`: tests/e2e/conftest.py loaded as a module (its bundle builders and `ServerProcess`),
  so the browser tests start real servers the way the e2e tests do.
"""

from __future__ import annotations

import importlib.util
import io
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from parasal.client import errors
from parasal.client.types import (
    BundleInfo,
    ConfusionCount,
    Explanation,
    FilterScore,
    Layer,
    Neighbor,
    Operation,
    Profile,
    PruningResult,
    PruningRow,
    ReferenceState,
    Sample,
    SimilarFailures,
)


def _load_e2e_conftest():
    path = Path(__file__).resolve().parents[1] / "e2e" / "conftest.py"
    spec = importlib.util.spec_from_file_location("parasal_e2e_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


e2e = _load_e2e_conftest()

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover"]
LAYERS = [Layer("conv1", "conv2d", 8, 0), Layer("conv2", "conv2d", 16, 8)]
NUM_FILTERS = 24


def png(value: int, size: int = 28) -> bytes:
    """A small grey PNG whose pixels depend on ``value`` (so images differ)."""
    array = (np.arange(size * size).reshape(size, size) * (value + 1) % 256).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _labels(i: int) -> tuple[int, int]:
    label = i % 3
    predicted = (label + 1) % 3 if i % 4 == 0 else label  # every fourth sample is wrong
    return label, predicted


def make_sample(i: int, image: bool = False) -> Sample:
    label, predicted = _labels(i)
    top = [FilterScore(index=i % NUM_FILTERS, layer="conv2", filter=i % 16, z=3.5)]
    return Sample(
        id=i,
        uri=f"fashion-mnist:test/{i}",
        label=label,
        predicted=predicted,
        correct=label == predicted,
        true_confidence=0.9 if label == predicted else 0.2,
        predicted_confidence=0.9 if label == predicted else 0.7,
        loss=0.1 + i / 100,
        top_filters=top,
        label_name=CLASS_NAMES[label],
        predicted_name=CLASS_NAMES[predicted],
        image_png=png(i) if image else None,
    )


class _Samples:
    """An iterator like the SDK's `samples()`, with the total the server reported."""

    def __init__(self, items, total):
        self._it = iter(items)
        self.total_size = total

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._it)


class FakeClient:
    """The SDK's surface over 40 samples (ids 0..39; every fourth misclassified)."""

    target = "fake:1"

    def __init__(self, num_samples: int = 40, reference: bool = True):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.num_samples = num_samples
        self.reference = reference
        self.fail_with: errors.ParasalError | None = None
        self.operations_by_id: dict[str, Operation] = {}

    def _record(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))
        if self.fail_with is not None:
            raise self.fail_with

    def called(self, name: str) -> list[dict]:
        return [kwargs for n, _, kwargs in self.calls if n == name]

    def _check(self, sample_id):
        if not 0 <= sample_id < self.num_samples:
            raise errors.NotFound(f"sample {sample_id} is not in bundle 'fashion'")

    # -- SaliencyService ------------------------------------------------------------------

    def index_info(self, *, bundle="", timeout=None):
        self._record("index_info", bundle=bundle)
        info = BundleInfo(
            name="fashion",
            model="demo-fashion",
            model_fingerprint="ab" * 32,
            dataset="fashion-mnist:test",
            num_samples=self.num_samples,
            num_misclassified=self.num_samples // 4,
            num_filters=NUM_FILTERS,
            layers=LAYERS,
            index_type="Flat",
            class_names=CLASS_NAMES,
            created_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
            input_shape=(1, 28, 28),
        )
        # the contract's BundleInfo.reference (helper C adds it to the SDK type)
        object.__setattr__(info, "reference", SimpleNamespace(layer="conv2") if self.reference else None)
        return [info]

    def sample(self, id, *, include_image=False, bundle="", timeout=None):
        self._record("sample", id, include_image=include_image, bundle=bundle)
        self._check(id)
        return make_sample(id, image=include_image)

    def profile(self, sample_id=None, image=None, label=None, full=False, top_k=None, *, bundle="", timeout=None):
        self._record("profile", sample_id=sample_id, image=image, label=label, full=full, top_k=top_k, bundle=bundle)
        if sample_id is not None:
            self._check(sample_id)
            label, predicted = _labels(sample_id)
        else:
            predicted = (label + 1) % 3
        vector = np.linspace(-1, 4, NUM_FILTERS).astype(np.float32) if full else None
        top = [
            FilterScore(index=23, layer="conv2", filter=15, z=4.0),
            FilterScore(index=3, layer="conv1", filter=3, z=2.5),
        ]
        return Profile(sample_id, label, predicted, 0.2, 0.7, 1.6, top, vector)

    def find_similar_failures(self, sample_id=None, image=None, label=None, k=None, only_misclassified=False, **kw):
        self._record(
            "find_similar_failures",
            sample_id=sample_id,
            image=image,
            label=label,
            k=k,
            only_misclassified=only_misclassified,
            **kw,
        )
        if sample_id is not None:
            self._check(sample_id)
        ids = [i for i in range(self.num_samples) if i % 4 == 0 and i != sample_id][: k or 10]
        return SimilarFailures(
            [Neighbor(i, 0.9 - 0.01 * n, make_sample(i)) for n, i in enumerate(ids)],
            [ConfusionCount(0, 1, len(ids))],
        )

    def explain_input(self, sample_id=None, image=None, label=None, **kw):
        self._record("explain_input", sample_id=sample_id, image=image, label=label, **kw)
        if sample_id is not None:
            self._check(sample_id)
        return Explanation(np.zeros((28, 28), np.float32), png(99), [], 0, 1)

    def surprise(self, sample_id=None, *, image=None, label=None, bundle="", **kwargs):
        self._record("surprise", sample_id=sample_id, image=image, label=label, bundle=bundle, **kwargs)
        if not self.reference:
            raise errors.FailedPrecondition("bundle 'fashion' has no reference data")
        exemplar = SimpleNamespace(id=5, uri="x", label=0, label_name="T-shirt/top", activation=0.8, image_png=png(5))
        dev = SimpleNamespace(
            layer="conv2",
            filter=7,
            alpha=0.9,
            mean=0.1,
            threshold=0.5,
            deviation=0.8,
            region_png=png(7),
            exemplars=[exemplar],
        )
        low = SimpleNamespace(
            layer="conv2",
            filter=2,
            alpha=0.0,
            mean=0.4,
            threshold=0.01,
            deviation=-0.4,
            region_png=None,
            exemplars=[],
        )
        return SimpleNamespace(beta=0.12, layer="conv2", method="grad_amap", surprise=[dev], expectation=[low])

    # -- BrowseService --------------------------------------------------------------------

    def samples(
        self,
        *,
        bundle="",
        true_labels=None,
        predicted_labels=None,
        correct=None,
        failure_mode=None,
        order_by="id",
        descending=False,
        page_size=None,
        limit=None,
        **kwargs,
    ):
        self._record(
            "samples",
            true_labels=true_labels,
            predicted_labels=predicted_labels,
            correct=correct,
            failure_mode=failure_mode,
            order_by=order_by,
            descending=descending,
            limit=limit,
            **kwargs,
        )
        items = [make_sample(i) for i in range(self.num_samples)]
        if kwargs.get("min_loss") is not None:
            items = [s for s in items if s.loss >= kwargs["min_loss"]]
        if kwargs.get("max_loss") is not None:
            items = [s for s in items if s.loss <= kwargs["max_loss"]]
        if true_labels:
            items = [s for s in items if s.label in true_labels]
        if predicted_labels:
            items = [s for s in items if s.predicted in predicted_labels]
        if correct is not None:
            items = [s for s in items if s.correct == correct]
        if failure_mode is not None:
            items = [s for s in items if not s.correct and s.id % 8 == failure_mode * 4]
        items.sort(key=lambda s: getattr(s, order_by), reverse=descending)
        total = len(items)
        return _Samples(items[:limit] if limit else items, total)

    def confusion_matrix(self, *, bundle=""):
        self._record("confusion_matrix", bundle=bundle)
        counts = np.zeros((3, 3), np.int64)
        for i in range(self.num_samples):
            t, p = _labels(i)
            counts[t, p] += 1
        per_class = counts.diagonal() / counts.sum(axis=1)
        return SimpleNamespace(
            counts=counts,
            class_names=CLASS_NAMES,
            per_class_accuracy=per_class,
            accuracy=float(counts.trace() / counts.sum()),
            num_samples=self.num_samples,
        )

    def failure_modes(self, *, bundle="", include_map=False, **kwargs):
        self._record("failure_modes", bundle=bundle, include_map=include_map)
        wrong = [i for i in range(self.num_samples) if i % 4 == 0]
        modes = []
        for m in (0, 1):
            members = [i for i in wrong if i % 8 == m * 4]
            pairs = {}
            for i in members:
                pairs[_labels(i)] = pairs.get(_labels(i), 0) + 1
            modes.append(
                SimpleNamespace(
                    id=m,
                    size=len(members),
                    confusions=[ConfusionCount(t, p, n) for (t, p), n in pairs.items()],
                    top_filters=[FilterScore(23, "conv2", 15, 3.0)],
                    medoid_ids=members[:2],
                    cohesion=0.7,
                    shared_surprise=[],
                    shared_expectation=[],
                    member_ids=members,
                )
            )
        points = (
            [
                SimpleNamespace(
                    id=i,
                    x=float(i),
                    y=float(i % 7),
                    label=_labels(i)[0],
                    predicted=_labels(i)[1],
                    failure_mode=(i % 8) // 4,
                )
                for i in wrong
            ]
            if include_map
            else []
        )
        return SimpleNamespace(
            modes=modes,
            method="agglomerative-cosine, k by silhouette",
            silhouette=0.31,
            num_misclassified=len(wrong),
            num_unassigned=0,
            map=points,
            map_method="PCA of the profiles",
        )

    # -- evaluations and operations -------------------------------------------------------

    def _new_operation(self, kind: str) -> SimpleNamespace:
        op_id = f"op-{len(self.operations_by_id) + 1}"
        rows = [
            PruningRow(sel, c, sel == "most" and c > 1, -0.1 * c, 0.05 * c, 0.2 if sel == "most" else 0.0, -0.1, 0.1, 2)
            for sel in ("most", "random")
            for c in (1, 5)
        ]
        result = PruningResult(ReferenceState(0, 0, 1, 0.2, 0.7), np.array([4, 8]), rows)
        op = Operation(op_id, kind, "succeeded", 1.0, "done", "fashion", None, None, result=result)
        self.operations_by_id[op_id] = op
        return SimpleNamespace(id=op_id)

    def start_pruning_evaluation(self, **kwargs):
        self._record("start_pruning_evaluation", **kwargs)
        return self._new_operation("pruning")

    def start_finetune_evaluation(self, **kwargs):
        self._record("start_finetune_evaluation", **kwargs)
        return self._new_operation("finetune")

    def start_experiment(self, name, **kwargs):
        self._record("start_experiment", name, **kwargs)
        return self._new_operation("experiment")

    def operations(self, state=None, page_size=None, *, bundle="", timeout=None):
        self._record("operations", bundle=bundle)
        return list(self.operations_by_id.values())

    def operation(self, op_id, *, bundle="", timeout=None):
        self._record("operation", op_id, bundle=bundle)
        if op_id not in self.operations_by_id:
            raise errors.NotFound(f"operation {op_id} not found")
        return self.operations_by_id[op_id]

    def cancel(self, op_id, *, bundle="", timeout=None):
        self._record("cancel", op_id, bundle=bundle)
        return self.operation(op_id)

    def operation_handle(self, op_id):
        op = self.operation(op_id)
        return SimpleNamespace(id=op_id, watch=lambda timeout=None: iter([op]))
