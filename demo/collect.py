"""What a report shows, gathered through the SDK (and, where it is at hand, the bundle itself).

The one code path of `parasal report` and `parasal demo`: every per-sample answer (profiles,
neighbours, heatmaps, surprise, evaluations) comes from a running server through
``parasal.client.Client``, as a user's would. The dataset section needs every sample at
once: with the bundle directory at hand it reads the bundle's arrays and runs the model
once over the samples (penultimate features, logits); with only a server it lists the
samples through the SDK, and the parts that need the model are left out with a note.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from parasal.client import Client, FailedPrecondition, ParasalError, Unimplemented

from .metrics import beta_summary, confusion_pairs, neighbor_agreement
from .report import (
    DeviationView,
    ExemplarView,
    ModesView,
    ModeView,
    NeighborView,
    QueryView,
    ReportContent,
    SurpriseView,
)

NO_REFERENCE = (
    "The bundle has no reference data, so β, surprise and expectation are left out; index it with "
    "`parasal index ... --reference-data SPEC` (e.g. fashion-mnist:train) to get them."
)


class BundleMismatch(Exception):
    """The server's bundle and the bundle directory given beside it are not the same bundle."""


@dataclass
class ReportOptions:
    """What a report investigates; the defaults are what `parasal report` and `make demo` do."""

    queries: int = 4  # misclassified samples investigated, one per confusion pair
    k: int = 10
    evaluations: bool = True  # one fine-tuning and one pruning evaluation on the first query
    eval_neighbors: int = 10
    eval_counts: tuple[int, ...] | None = None  # None: the server's default for the model
    surprise_rows: int = 8  # surprise / expectation filters listed per query
    detailed: int = 3  # of which shown with their region and exemplar strip (Hartley Fig. 7-8)
    mode_medoids: int = 5  # medoid images per failure mode
    timeout: float = 120.0
    title: str | None = None
    progress: bool = True


@dataclass
class SampleTable:
    """Every indexed sample's labels and scores, (N,) arrays in one order (ascending ids)."""

    ids: np.ndarray  # int64
    labels: np.ndarray  # int64
    predicted: np.ndarray  # int64
    true_confidence: np.ndarray  # float32, softmax probability of the true class
    predicted_confidence: np.ndarray  # float32
    beta: np.ndarray | None = None  # float32; None without reference data

    @property
    def correct(self) -> np.ndarray:
        return self.labels == self.predicted

    @classmethod
    def from_bundle(cls, bundle) -> SampleTable:
        ids = np.asarray(bundle.ids, dtype=np.int64)
        metas = bundle.metas([int(i) for i in ids])
        return cls(
            ids=ids,
            labels=np.asarray(bundle.labels, dtype=np.int64),
            predicted=np.asarray(bundle.predicted, dtype=np.int64),
            true_confidence=np.array([m.true_confidence for m in metas], dtype=np.float32),
            predicted_confidence=np.array([m.predicted_confidence for m in metas], dtype=np.float32),
            beta=np.asarray(bundle.beta, dtype=np.float32) if bundle.has_reference else None,
        )

    @classmethod
    def from_client(cls, client: Client, bundle: str = "", *, has_reference: bool = False) -> SampleTable:
        samples = sorted(client.samples(bundle=bundle, page_size=1000), key=lambda s: s.id)
        return cls(
            ids=np.array([s.id for s in samples], dtype=np.int64),
            labels=np.array([s.label for s in samples], dtype=np.int64),
            predicted=np.array([s.predicted for s in samples], dtype=np.int64),
            true_confidence=np.array([s.true_confidence for s in samples], dtype=np.float32),
            predicted_confidence=np.array([s.predicted_confidence for s in samples], dtype=np.float32),
            beta=np.array([np.nan if s.beta is None else s.beta for s in samples], dtype=np.float32)
            if has_reference
            else None,
        )


def gather_report(client: Client, opts: ReportOptions, *, bundle=None, bundle_name: str = "") -> ReportContent:
    """Asks the server (and reads ``bundle``, an opened ``parasal.indexer.Bundle`` of the same
    data, when given) for everything the report shows."""
    started = time.perf_counter()
    info = client.index_info(bundle=bundle_name)[0]
    if bundle is not None:
        _check_same_bundle(info, bundle)
    notes: dict[str, str] = {}
    if not info.class_names:
        notes["classes"] = "The bundle has no class names; classes are shown by number."
    table = SampleTable.from_bundle(bundle) if bundle is not None else _table_over_sdk(client, info)
    ids = _pick_queries(table, opts.queries)
    if opts.queries == 0:
        notes["queries"] = "No samples investigated (--queries 0)."
    elif not ids:
        notes["queries"] = "No misclassified samples: there is no failure to investigate."
    queries = [_investigate(client, info, sid, opts, bundle_name, first=i == 0) for i, sid in enumerate(ids)]
    neighbors, beta = _dataset_section(bundle, table, _has_reference(info), opts, notes)
    modes = _failure_modes(client, bundle_name, opts, notes)
    return ReportContent(
        title=opts.title or f"parasal report: where {info.model} goes wrong on {info.dataset}",
        summary=_summary(info, bundle, time.perf_counter() - started),
        class_names=list(info.class_names),
        layers=[(layer.name, layer.filters, layer.offset) for layer in info.layers],
        queries=queries,
        dataset_confusions=confusion_pairs(table.labels, table.predicted, top=10),
        neighbors=neighbors,
        beta=beta,
        notes=notes,
        k=opts.k,
        modes=modes,
    )


def _check_same_bundle(info, bundle) -> None:
    """``--server`` and ``--bundle`` together must name one bundle: the figures mix both."""
    if info.model_fingerprint != bundle.fingerprint or info.num_samples != bundle.num_samples:
        raise BundleMismatch(
            f"the server's bundle {info.name!r} ({info.num_samples} samples, model {info.model_fingerprint[:12]}…) "
            f"is not the bundle at {bundle.path} ({bundle.num_samples} samples, model {bundle.fingerprint[:12]}…)"
        )


def _dataset_section(bundle, table: SampleTable, has_reference: bool, opts: ReportOptions, notes: dict):
    """(neighbour metrics | None, beta summary | None); ``notes`` says why for each None."""
    neighbors, beta = None, None
    outputs = _model_outputs(bundle, table, opts) if bundle is not None else None
    if outputs is None:
        notes["neighbors"] = notes["pre_softmax"] = notes["pre_softmax_predicted"] = (
            "Needs every profile and a pass of the model: pass --bundle DIR (the bundle's directory)."
        )
    elif len(table.ids) <= opts.k:
        notes["neighbors"] = f"Needs more than {opts.k} samples; the bundle has {len(table.ids)}."
    else:
        neighbors = _neighbor_metrics(bundle, table, outputs.penultimate, opts.k)
        if outputs.penultimate is None:
            notes["penultimate"] = "The model has no nn.Linear head, so there is no penultimate-layer baseline."
    if has_reference and table.beta is not None:
        scores = {"post_softmax": table.true_confidence, "post_softmax_predicted": table.predicted_confidence}
        if outputs is not None:
            scores.update(pre_softmax=outputs.true_logit, pre_softmax_predicted=outputs.predicted_logit)
        beta = beta_summary(table.beta, table.labels, table.correct, scores=scores)
    else:
        notes["beta"] = NO_REFERENCE
    return neighbors, beta


def _failure_modes(client: Client, bundle: str, opts: ReportOptions, notes: dict) -> ModesView | None:
    """The server's failure modes with their medoids' images; None (and a note) where the
    server cannot compute them (too few failures) or does not offer them."""
    try:
        modes = client.failure_modes(bundle=bundle, medoids=opts.mode_medoids, top_filters=3)
    except (FailedPrecondition, Unimplemented) as exc:
        notes["modes"] = f"No failure modes: {exc.details or exc.code.name}"
        return None
    views = [
        ModeView(
            id=m.id,
            size=m.size,
            cohesion=m.cohesion,
            confusions=[(c.label, c.predicted, c.count) for c in m.confusions[:3]],
            top_filters=[(f.layer, f.filter, f.z) for f in m.top_filters],
            medoids=[(int(i), _image(client, int(i), bundle)) for i in m.medoid_ids],
        )
        for m in modes
    ]
    return ModesView(modes.method, modes.silhouette, modes.num_misclassified, views)


def _image(client: Client, sid: int, bundle: str) -> bytes:
    return client.sample(sid, include_image=True, bundle=bundle).image_png


def _summary(info, bundle, seconds: float) -> dict:
    ref = info.reference
    return {
        "model": info.model,
        "dataset": info.dataset,
        "samples indexed": info.num_samples,
        "misclassified": info.num_misclassified,
        "filters per profile": info.num_filters,
        "reference data": f"{ref.dataset} ({ref.num_samples} samples; {ref.method} on {ref.layer})" if ref else "none",
        "bundle": str(bundle.path) if bundle is not None else info.name,
        "seconds": round(seconds, 1),
    }


def _has_reference(info) -> bool:
    return info.reference is not None


def _table_over_sdk(client: Client, info) -> SampleTable:
    return SampleTable.from_client(client, info.name, has_reference=_has_reference(info))


# -- the query samples ----------------------------------------------------------------------


def _pick_queries(table: SampleTable, count: int) -> list[int]:
    """The most confidently wrong sample of each of the most frequent confusion pairs."""
    chosen = []
    for true, pred, _ in confusion_pairs(table.labels, table.predicted, top=count):
        rows = np.flatnonzero((table.labels == true) & (table.predicted == pred))
        chosen.append(int(table.ids[rows[int(np.argmax(table.predicted_confidence[rows]))]]))
    return chosen


def _investigate(client: Client, info, sid: int, opts: ReportOptions, bundle: str, *, first: bool) -> QueryView:
    sample = client.sample(sid, include_image=True, bundle=bundle)
    profile = client.profile(sample_id=sid, full=True, bundle=bundle)
    similar = client.find_similar_failures(sample_id=sid, k=opts.k, only_misclassified=True, bundle=bundle)
    explanation = client.explain_input(sample_id=sid, bundle=bundle)
    neighbors = [
        NeighborView(
            n.id,
            n.similarity,
            n.sample.label,
            n.sample.predicted,
            _image(client, n.id, bundle),
        )
        for n in similar.neighbors
    ]
    view = QueryView(
        id=sid,
        label=sample.label,
        predicted=sample.predicted,
        true_confidence=sample.true_confidence,
        predicted_confidence=sample.predicted_confidence,
        image_png=sample.image_png,
        overlay_png=explanation.overlay_png,
        profile=profile.vector,
        top_filters=[(f.layer, f.filter, f.z) for f in profile.top_filters],
        neighbors=neighbors,
        confusions=[(c.label, c.predicted, c.count) for c in similar.confusions],
    )
    if _has_reference(info):
        view.surprise = _surprise(client, sid, opts, bundle)
    if first and opts.evaluations:
        _evaluate(client, view, info, opts, bundle)
    return view


def _surprise(client: Client, sid: int, opts: ReportOptions, bundle: str) -> SurpriseView:
    s = client.surprise(
        sid,
        bundle=bundle,
        max_filters=opts.surprise_rows,
        detailed=opts.detailed,
        include_alpha=False,
        include_exemplar_images=True,
    )
    rows = {kind: [_deviation(d) for d in getattr(s, kind)] for kind in ("surprise", "expectation")}
    return SurpriseView(
        beta=s.beta,
        layer=s.layer,
        method=s.method,
        high_percentile=s.high_percentile,
        low_percentile=s.low_percentile,
        surprise=rows["surprise"],
        expectation=rows["expectation"],
    )


def _deviation(d) -> DeviationView:
    return DeviationView(
        layer=d.layer,
        filter=d.filter,
        alpha=d.alpha,
        mean=d.mean,
        threshold=d.threshold,
        deviation=d.deviation,
        region_png=d.region_png or None,
        exemplars=[ExemplarView(e.id, e.label, e.activation, e.image_png or None) for e in d.exemplars],
    )


def _evaluate(client: Client, view: QueryView, info, opts: ReportOptions, bundle: str) -> None:
    """One fine-tuning and one pruning evaluation on ``view``'s sample, as operations with
    progress. A refusal by the server (e.g. counts the model has too few filters for) becomes
    a note on the page, not a failed report."""
    kwargs = dict(sample_id=view.id, counts=opts.eval_counts, num_neighbors=opts.eval_neighbors, bundle=bundle)
    for what, start, attr in (
        ("fine-tuning evaluation", client.start_finetune_evaluation, "finetune_rows"),
        ("pruning evaluation", client.start_pruning_evaluation, "pruning_rows"),
    ):
        try:
            setattr(view, attr, _run_operation(start(**kwargs), what, opts))
        except ParasalError as exc:
            view.notes.append(f"The {what} was not run: {exc.details or exc.code.name} ({exc.code.name}).")


def _run_operation(handle, what: str, opts: ReportOptions) -> list[dict]:
    bar_format = "{l_bar}{bar}| {elapsed}"
    with tqdm(total=1.0, desc=what, unit="", bar_format=bar_format, disable=not opts.progress) as bar:
        for snapshot in handle:
            bar.n = round(snapshot.progress, 3)
            bar.set_postfix_str(snapshot.message[:40])
            bar.refresh()
    return flat_rows(handle.result(timeout=opts.timeout).to_dicts())


def flat_rows(rows: list[dict], max_filters: int = 5) -> list[dict]:
    """Evaluation rows as table cells: nested records (collateral, spread) become
    ``<name>_<field>`` columns, the changed filters a short list; every row gets every
    column (None where a row has no value, e.g. no spread outside the random rows)."""
    records = {k for row in rows for k, v in row.items() if isinstance(v, dict)}  # None in some rows
    flat = []
    for row in rows:
        out: dict = {}
        for key, value in row.items():
            if key in records:
                out.update({f"{key}_{k}": v for k, v in (value or {}).items()})
            elif isinstance(value, (list, tuple)):
                shown = ", ".join(str(v) for v in value[:max_filters])
                out[key] = shown + (f", … ({len(value)})" if len(value) > max_filters else "")
            else:
                out[key] = value
        flat.append(out)
    columns = list(dict.fromkeys(k for row in flat for k in row))
    return [{c: row.get(c) for c in columns} for row in flat]


# -- the dataset section ----------------------------------------------------------------------


@dataclass
class ModelOutputs:
    penultimate: np.ndarray | None  # (N, D) inputs of the last nn.Linear; None without one
    true_logit: np.ndarray  # (N,) the true class's pre-softmax score
    predicted_logit: np.ndarray  # (N,) the predicted class's (the largest logit)


def _model_outputs(bundle, table: SampleTable, opts: ReportOptions, batch_size: int = 500) -> ModelOutputs:
    """One pass of the bundle's model over every sample, in ``table`` order, with the bundle's
    preprocessing: what the report needs and the bundle does not store."""
    import torch

    loaded = bundle.load_model()
    model = loaded.model.eval()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    captured: list[torch.Tensor] = []
    logits: list[torch.Tensor] = []
    handle = None
    if linears:
        handle = linears[-1].register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].flatten(1)))
    ids = [int(i) for i in table.ids]
    starts = range(0, len(ids), batch_size)
    try:
        with torch.no_grad():
            for start in tqdm(starts, desc="model pass", unit="batch", disable=not opts.progress):
                chunk = ids[start : start + batch_size]
                batch = torch.stack([loaded.preprocessing(bundle.load_image(i)) for i in chunk])  # (b, C, H, W)
                logits.append(model(batch).flatten(1).float())  # (b, classes)
    finally:
        if handle is not None:
            handle.remove()
    out = torch.cat(logits).numpy() if logits else np.zeros((0, 1), np.float32)
    rows = np.arange(len(ids))
    penultimate = torch.cat(captured).numpy() if captured else None
    return ModelOutputs(
        penultimate=penultimate, true_logit=out[rows, table.labels], predicted_logit=out[rows, table.predicted]
    )


def _neighbor_metrics(bundle, table: SampleTable, penultimate: np.ndarray | None, k: int) -> dict:
    saliency = np.asarray(bundle.profiles([int(i) for i in table.ids]), dtype=np.float32)
    return {
        "saliency": neighbor_agreement(saliency, table.labels, table.predicted, k),
        "penultimate": None
        if penultimate is None
        else neighbor_agreement(penultimate, table.labels, table.predicted, k),
    }
