"""The bundle format: directory layout, ``manifest.json``, generations, verification.

On disk a bundle is a directory of immutable *generations* and a pointer::

    BUNDLE/
      CURRENT              "gen-00002\\n": the generation readers open (replaced with os.replace)
      gen-00001/           the first build, kept so readers that opened it keep working
      gen-00002/           written by `parasal index --append-to BUNDLE`
        manifest.json      format version, model, preprocessing, layout, datasets, counts,
                           index type, versions, skipped samples, sha256+size of every file
        index.faiss        FAISS IndexIDMap2 (CPU) over L2-normalised standardized profiles
        meta.lmdb          LMDB (single file): id -> JSON record (see metadata.py)
        profiles.npy       (N, F) float16 standardized profiles, rows in id order
        table.npz          ids (N,) int64 ascending + label, predicted, correct, confidences, loss
        stats.npz          RunningStats: count, mean (F,), m2 (F,) float64
        model.pt           (when the model has a weights file) a copy of the state dict or of the
                           TorchScript archive: the bundle serves without the original path
        reference.npz      (built with --reference-data) the class-filter statistics of the reference
                           set, its exemplars and its rows' ids, labels and uris (reference_data.py)
        alpha.npy          (with reference.npz) (N, n_filters) float32 filter importance α of every
                           indexed sample, rows in id order; table.npz then also holds beta,
                           num_surprise and num_expectation

Publishing is atomic at two levels. A new bundle is assembled under a hidden sibling
name (``gen-00001`` and ``CURRENT`` inside it) and renamed to its final path, so the path
either does not exist or holds a complete bundle. An append assembles ``.gen-0000N.*``
inside the bundle, renames it to ``gen-0000N`` (complete, fsynced, but not yet current),
then replaces ``CURRENT``. A reader resolves ``CURRENT`` once, when it opens, and from
then on only reads that generation's directory, which is never modified or deleted: it
sees the old or the new generation, whole, never a mixture. Old generations stay on disk
until removed by hand (after no reader uses them).

``open_bundle`` also accepts a generation directory itself (one holding ``manifest.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parasal.core import FilterLayout

from .durable import atomic_write_bytes, sha256_file
from .errors import BundleCorrupt, BundleVersionMismatch
from .preprocessing import Preprocessing

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "CURRENT",
    "INDEX_FILE",
    "META_FILE",
    "PROFILES_FILE",
    "TABLE_FILE",
    "STATS_FILE",
    "DATA_FILES",
    "MODEL_FILE",
    "REFERENCE_FILE",
    "ALPHA_FILE",
    "REFERENCE_FILES",
    "generation_name",
    "parse_generation",
    "resolve_generation",
    "read_manifest",
    "write_manifest",
    "file_entries",
    "verify_files",
    "tool_versions",
    "utc_now",
    "is_bundle_dir",
    "Manifest",
    "ModelInfo",
    "DatasetInfo",
    "Counts",
    "IndexInfo",
    "SkippedSample",
    "FileEntry",
    "ReferenceInfo",
]

FORMAT = "parasal-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CURRENT = "CURRENT"
INDEX_FILE = "index.faiss"
META_FILE = "meta.lmdb"
PROFILES_FILE = "profiles.npy"
TABLE_FILE = "table.npz"
STATS_FILE = "stats.npz"
DATA_FILES = (INDEX_FILE, META_FILE, PROFILES_FILE, TABLE_FILE, STATS_FILE)
MODEL_FILE = "model.pt"  # optional: the model's weights (or TorchScript archive), kept in the generation
REFERENCE_FILE = "reference.npz"  # with --reference-data: class-filter statistics + exemplars
ALPHA_FILE = "alpha.npy"  # with --reference-data: (N, n_filters) float32 α of the indexed samples
REFERENCE_FILES = (REFERENCE_FILE, ALPHA_FILE)  # present together or not at all
_GEN_RE = re.compile(r"^gen-(\d{5,})$")


def generation_name(number: int) -> str:
    return f"gen-{number:05d}"


def parse_generation(name: str) -> int:
    m = _GEN_RE.match(name)
    if not m:
        raise BundleCorrupt(f"{CURRENT} names {name!r}, which is not a generation (gen-NNNNN)")
    return int(m.group(1))


def is_bundle_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p / CURRENT).is_file() or (p / MANIFEST).is_file()


def resolve_generation(path: str | os.PathLike) -> Path:
    """The generation directory a reader of ``path`` should open (see module docstring)."""
    root = Path(path)
    if not root.exists():
        raise BundleCorrupt(f"bundle {root} does not exist")
    if not root.is_dir():
        raise BundleCorrupt(f"bundle {root} is not a directory")
    pointer = root / CURRENT
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        parse_generation(name)
        gen = root / name
        if not gen.is_dir():
            raise BundleCorrupt(f"bundle {root} is truncated: {CURRENT} points to {name}, which is missing")
        return gen
    if (root / MANIFEST).is_file():
        return root
    raise BundleCorrupt(f"{root} is not a parasal bundle (no {CURRENT} or {MANIFEST}); truncated or not a bundle")


def _manifest_checksum(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(gen_dir: str | os.PathLike, manifest: dict) -> None:
    """Seal ``manifest`` (checksum over its canonical JSON) and write it atomically."""
    manifest = dict(manifest)
    manifest["manifest_sha256"] = _manifest_checksum(manifest)
    text = json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write_bytes(Path(gen_dir) / MANIFEST, text.encode())


def read_manifest(gen_dir: str | os.PathLike, *, check: bool = True) -> dict:
    """Parse and check a generation's manifest: format, version, self-checksum."""
    path = Path(gen_dir) / MANIFEST
    if not path.is_file():
        raise BundleCorrupt(f"bundle generation {gen_dir} has no {MANIFEST} (truncated?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleCorrupt(f"{path} is not valid JSON ({e}); the bundle is truncated or damaged") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleCorrupt(
            f"{path} is not a parasal bundle manifest (format {manifest.get('format')!r})"
            if isinstance(manifest, dict)
            else f"{path} is not a parasal bundle manifest"
        )
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleVersionMismatch(
            f"bundle {gen_dir} has format version {version}, but this parasal reads version {FORMAT_VERSION}; "
            "rebuild it with `parasal index` from this version"
        )
    if check and manifest.get("manifest_sha256") != _manifest_checksum(manifest):
        raise BundleCorrupt(f"{path} was modified after the bundle was written (manifest checksum mismatch)")
    return manifest


def file_entries(gen_dir: str | os.PathLike, names=DATA_FILES) -> dict[str, dict]:
    out = {}
    for name in names:
        p = Path(gen_dir) / name
        out[name] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    return out


def verify_files(gen_dir: str | os.PathLike, manifest: dict, mode: bool | str = True) -> None:
    """Check every file the manifest lists: presence and size always (unless ``mode`` is
    False), sha256 too when ``mode`` is True or "sha256". ``mode="size"`` is for large
    bundles where hashing gigabytes at every open is too slow."""
    if mode is False or mode is None:
        return
    if mode not in (True, "sha256", "size"):
        raise ValueError(f"verify must be True, False, 'sha256' or 'size', not {mode!r}")
    files = manifest.get("files")
    allowed = {*DATA_FILES, MODEL_FILE, *REFERENCE_FILES}
    if not isinstance(files, dict) or not set(DATA_FILES) <= set(files) or set(files) - allowed:
        raise BundleCorrupt(f"manifest of {gen_dir} does not list the bundle's files {list(DATA_FILES)}")
    has_reference = manifest.get("reference") is not None
    if any((name in files) != has_reference for name in REFERENCE_FILES):
        raise BundleCorrupt(
            f"manifest of {gen_dir} lists reference files {sorted(set(REFERENCE_FILES) & set(files))} "
            f"but {'has' if has_reference else 'has no'} reference entry"
        )
    if (manifest.get("model") or {}).get("file") not in (None, *files):
        raise BundleCorrupt(f"manifest of {gen_dir} names a model file it does not list")
    for name, entry in files.items():
        p = Path(gen_dir) / name
        if not p.is_file():
            raise BundleCorrupt(f"bundle {gen_dir} is truncated: {name} is missing")
        size = p.stat().st_size
        if size != entry["size"]:
            raise BundleCorrupt(
                f"bundle {gen_dir} is truncated or modified: {name} is {size} bytes, the manifest says {entry['size']}"
            )
    if mode in (True, "sha256"):
        for name, entry in files.items():
            if sha256_file(Path(gen_dir) / name) != entry["sha256"]:
                raise BundleCorrupt(f"bundle {gen_dir} was modified: sha256 of {name} does not match the manifest")


def tool_versions() -> dict[str, str]:
    import faiss
    import lmdb
    import numpy
    import torch

    try:
        from importlib.metadata import version

        parasal_version = version("parasal")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        parasal_version = "unknown"
    return {
        "parasal": parasal_version,
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "numpy": numpy.__version__,
        "lmdb": lmdb.__version__,
        "python": platform.python_version(),
    }


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_current(root: str | os.PathLike, generation: int) -> None:
    atomic_write_bytes(Path(root) / CURRENT, (generation_name(generation) + "\n").encode())


# ---------------------------------------------------------------------------------------
# The typed view readers use. The writer (assemble.py) builds the JSON dict itself, so the
# bytes on disk do not depend on this view; raw sub-dicts are kept where the writer copies
# them into the next generation (``entry``, ``statistics``, ``job``).


@dataclass(frozen=True)
class ModelInfo:
    """``manifest["model"]``: how to reload the model and how to recognise its weights."""

    spec: dict  # JSON-able; load_model(spec) reloads the same model (from the paths it was built with)
    fingerprint: str  # state_dict_fingerprint of the weights the bundle was built with
    num_classes: int | None = None
    file: str | None = None  # the generation's copy of the weights (MODEL_FILE), if it keeps one
    #: absolute path the model loads from: the reader sets it (the generation's copy, or the
    #: ``weights=`` override given to open_bundle); None: the spec's own paths
    path: str | None = None

    @property
    def name(self) -> str:
        """The spec as users write it ("demo-fashion", "torchvision:resnet50", ...)."""
        from .models import model_display_name

        return model_display_name(self.spec)

    @property
    def weights(self) -> str | None:
        """The weights file the spec names, if any (the path the bundle was built from)."""
        return self.spec.get("weights")

    @property
    def pythonpath(self) -> str | None:
        """For a factory model: the ``sys.path`` entry its module was imported from at index time."""
        return (self.spec.get("module") or {}).get("pythonpath")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelInfo:
        num_classes = d.get("num_classes")
        return cls(
            spec=dict(d["spec"]),
            fingerprint=str(d["fingerprint"]),
            num_classes=None if num_classes is None else int(num_classes),
            file=d.get("file"),
        )


@dataclass(frozen=True)
class DatasetInfo:
    """One entry of ``manifest["datasets"]``: a dataset indexed by one generation."""

    spec: str  # as given to `parasal index DATA`
    description: dict  # Dataset.describe(): kind, size, classes when known, ...
    generation: int | None = None
    id_offset: int | None = None
    indexed: int | None = None
    skipped: int | None = None
    entry: dict = field(default_factory=dict, repr=False)  # the raw JSON entry (appends copy it)

    @property
    def classes(self) -> list[str] | None:
        return self.description.get("classes")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DatasetInfo:
        return cls(
            spec=str(d.get("spec", "")),
            description=dict(d.get("description") or {}),
            generation=d.get("generation"),
            id_offset=d.get("id_offset"),
            indexed=d.get("indexed"),
            skipped=d.get("skipped"),
            entry=dict(d),
        )


@dataclass(frozen=True)
class Counts:
    samples: int
    misclassified: int
    skipped: int


@dataclass(frozen=True)
class IndexInfo:
    """``manifest["index"]``: the FAISS index's type and search settings."""

    type: str  # canonical FAISS factory string ("Flat", "IVF256,Flat", ...)
    nprobe: int | None = None
    ntotal: int | None = None
    entry: dict = field(default_factory=dict, repr=False)  # the raw JSON entry (appends extend it)


@dataclass(frozen=True)
class SkippedSample:
    id: int
    uri: str
    reason: str

    def to_dict(self) -> dict:
        return {"id": self.id, "uri": self.uri, "reason": self.reason}


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass(frozen=True)
class ReferenceInfo:
    """``manifest["reference"]``: the reference set behind α, β and the surprise/expectation counts.

    Surprise and expectation (Hartley et al. §3): each indexed sample's α (one score per
    filter of ``layer``, by ``method``) against the per-(class, filter) distributions of α
    over the ``num_samples`` reference samples; counts at the percentiles ``high``/``low``."""

    dataset: str  # the data spec, as given to --reference-data
    num_samples: int  # reference samples in the statistics (after --reference-limit and skips)
    layer: str  # the conv layer α is computed on (default: the last conv to run)
    method: str  # core.IMPORTANCE_METHODS: grad_amap (the paper's), taylor, ...
    num_filters: int  # filters of that layer
    exemplars_per_filter: int  # top k reference samples kept per filter (overall and per class)
    high: float = 99.9  # surprise: α above this percentile of the sample's class
    low: float = 0.1  # expectation: α below this percentile (among the class's above-average filters)
    description: dict = field(default_factory=dict)  # Dataset.describe() of the reference data
    limit: int | None = None  # --reference-limit
    skipped: int = 0  # reference samples that could not be used (unreadable, wrong size, ...)
    from_generation: int | None = None  # the generation that computed the statistics (appends keep them)
    entry: dict = field(default_factory=dict, repr=False, compare=False)  # the raw JSON entry (appends copy it)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReferenceInfo:
        return cls(
            dataset=str(d["dataset"]),
            num_samples=int(d["num_samples"]),
            layer=str(d["layer"]),
            method=str(d["method"]),
            num_filters=int(d["num_filters"]),
            exemplars_per_filter=int(d["exemplars_per_filter"]),
            high=float(d["high"]),
            low=float(d["low"]),
            description=dict(d.get("description") or {}),
            limit=None if d.get("limit") is None else int(d["limit"]),
            skipped=int(d.get("skipped") or 0),
            from_generation=d.get("from_generation"),
            entry=dict(d),
        )

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "num_samples": self.num_samples,
            "layer": self.layer,
            "method": self.method,
            "num_filters": self.num_filters,
            "exemplars_per_filter": self.exemplars_per_filter,
            "high": self.high,
            "low": self.low,
            "description": self.description,
            "limit": self.limit,
            "skipped": self.skipped,
            "from_generation": self.from_generation,
        }


@dataclass(frozen=True)
class Manifest:
    """A generation's ``manifest.json``, parsed once by the reader (``Bundle.manifest``).

    Picklable (plain data), so a child process can be handed it to reload the model."""

    format_version: int
    generation: int
    parent_generation: int | None
    created: str | None  # UTC, "YYYY-MM-DDTHH:MM:SSZ"
    model: ModelInfo
    preprocessing: Preprocessing
    layout: FilterLayout
    datasets: tuple[DatasetInfo, ...]
    counts: Counts
    index: IndexInfo
    next_id: int | None = None
    statistics: dict = field(default_factory=dict)  # count, from_generation, frozen_since
    skipped: tuple[SkippedSample, ...] = ()
    versions: dict = field(default_factory=dict)  # tool -> version string
    job: dict = field(default_factory=dict)  # how the generation was computed (informational)
    files: dict = field(default_factory=dict)  # file name -> FileEntry
    reference: ReferenceInfo | None = None  # None: built without --reference-data

    @property
    def num_filters(self) -> int:
        return self.layout.num_filters

    @property
    def dataset_specs(self) -> list[str]:
        return [d.spec for d in self.datasets]

    @property
    def classes(self) -> list[str] | None:
        """Class names of the first dataset, when it has them."""
        return self.datasets[0].classes

    @classmethod
    def from_dict(cls, m: Mapping[str, Any]) -> Manifest:
        """Parse the JSON dict (KeyError, TypeError or ValueError when a field is malformed)."""
        counts, index = m["counts"], m["index"]
        return cls(
            format_version=int(m["format_version"]),
            generation=int(m["generation"]),
            parent_generation=m.get("parent_generation"),
            created=m.get("created"),
            model=ModelInfo.from_dict(m["model"]),
            preprocessing=Preprocessing.from_dict(m["preprocessing"]),
            layout=FilterLayout.from_dict(m["layout"]),
            datasets=tuple(DatasetInfo.from_dict(d) for d in m.get("datasets", ())),
            counts=Counts(int(counts["samples"]), int(counts["misclassified"]), int(counts["skipped"])),
            index=IndexInfo(
                type=str(index["type"]), nprobe=index.get("nprobe"), ntotal=index.get("ntotal"), entry=dict(index)
            ),
            next_id=m.get("next_id"),
            statistics=dict(m.get("statistics") or {}),
            skipped=tuple(SkippedSample(int(s["id"]), str(s["uri"]), str(s["reason"])) for s in m.get("skipped", ())),
            versions=dict(m.get("versions") or {}),
            job=dict(m.get("job") or {}),
            files={name: FileEntry(int(e["size"]), str(e["sha256"])) for name, e in (m.get("files") or {}).items()},
            reference=None if m.get("reference") is None else ReferenceInfo.from_dict(m["reference"]),
        )
