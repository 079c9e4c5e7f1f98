"""What the indexer tells the user about the data, and the checks that stop a bad run.

Datasets go wrong silently: labels in another order than the model's classes (an image
folder's classes are its sorted subfolder names), a sample of the first N rows that holds
two classes, rows skipped by the hundred. So a job prints the class -> index mapping and
how the samples were chosen before any work, refuses to publish when more than
``max_skipped`` of the samples were skipped (counts by reason, first examples), and warns
after publishing when the error rate is implausible for a model that was trained on
these labels.
"""

from __future__ import annotations

from collections import defaultdict

__all__ = [
    "class_mapping",
    "choose_classes",
    "skip_kind",
    "skipped_summary",
    "check_skipped",
    "error_rate_warning",
    "DEFAULT_MAX_SKIPPED",
]

#: the fraction of a job's samples that may be skipped before nothing is published
DEFAULT_MAX_SKIPPED = 0.01
_SHOWN_CLASSES = 20
_EXAMPLES = 2
#: below this many samples an error rate says little
_MIN_RATE_SAMPLES = 10
_CHANCE_MARGIN = 0.05


def class_mapping(ds) -> str:
    """One line: where the class order comes from and the class -> index mapping."""
    classes = getattr(ds, "classes", None)
    source = getattr(ds, "class_source", None) or "the dataset"
    if not classes:
        return f"labels: {source}, taken as the model's class indices"
    shown = ", ".join(f"{k} {name}" for k, name in enumerate(classes[:_SHOWN_CLASSES]))
    more = f", ... ({len(classes)} classes)" if len(classes) > _SHOWN_CLASSES else ""
    return f"classes ({source}): {shown}{more}"


def choose_classes(ds, candidates: list[tuple[list[str] | None, str]]) -> tuple[object, str | None]:
    """An image folder ordered by sorted subfolder names takes the first candidate class
    list (the bundle's, the model's own names) that names all its subfolders. Returns the
    dataset and a note when the folder's names match none of them."""
    if getattr(ds, "kind", None) != "image-folder" or ds.class_source != "sorted subfolder names":
        return ds, None
    folders = set(ds.classes)
    offered = [(names, source) for names, source in candidates if names]
    for names, source in offered:
        if folders <= set(names):
            return ds.with_classes(names, source), None
    if not offered:
        return ds, None
    names, source = offered[0]
    return ds, (
        f"the subfolder names are not all among {source} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); "
        "using their sorted order: pass --classes in the model's order if that is not it"
    )


def skip_kind(reason: str) -> str:
    """The reason a sample was skipped, as a category for counts."""
    if reason.startswith("label "):
        return "label out of range"
    if "outside the dataset's root" in reason:
        return "outside the dataset's root"
    if "pixels; the limit is" in reason:
        return "image too large"
    if reason.startswith("cannot open the file") or reason == "not a regular file":
        return "missing or unreadable file"
    if reason.startswith("preprocess"):
        return "wrong size or mode after preprocessing"
    if reason.startswith("non-finite"):
        return "non-finite saliency or loss"
    return "undecodable image"


def skipped_summary(skipped: list[tuple[str, str]], total: int) -> str:
    """``skipped``: (uri, reason) pairs. Counts by kind, most frequent first, with examples."""
    by_kind: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for uri, reason in skipped:
        by_kind[skip_kind(reason)].append((uri, reason))
    lines = [f"skipped {len(skipped)} of {total} samples ({len(skipped) / max(total, 1):.1%}):"]
    for kind, rows in sorted(by_kind.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        examples = "; ".join(f"{uri} ({reason})" for uri, reason in rows[:_EXAMPLES])
        lines.append(f"  {len(rows)} {kind}, e.g. {examples}")
    return "\n".join(lines)


def check_skipped(skipped: list[tuple[str, str]], total: int, max_skipped: float) -> tuple[str | None, str | None]:
    """(summary to print or None, error message or None when over ``max_skipped``)."""
    if not skipped:
        return None, None
    summary = skipped_summary(skipped, total)
    if len(skipped) <= max_skipped * total:
        return summary, None
    needed = len(skipped) / total
    return summary, (
        f"{summary}\nthat is more than --max-skipped {max_skipped:g} ({max_skipped:.1%}) of the samples, "
        f"so nothing was published. Fix the data, or pass --max-skipped {min(1.0, needed + 0.005):.2f} "
        "to publish the rest anyway (rerunning reuses the computed shards)"
    )


def error_rate_warning(misclassified: int, samples: int, num_classes: int, mapping: str) -> str | None:
    """A warning when the error rate is above 50 % or within a few points of chance
    (1 - 1/num_classes): labels probably follow another class order than the model's."""
    if samples < _MIN_RATE_SAMPLES or num_classes < 2:
        return None
    rate, chance = misclassified / samples, 1 - 1 / num_classes
    if rate <= 0.5 and rate < chance - _CHANCE_MARGIN:
        return None
    near = f", about chance for {num_classes} classes ({chance:.0%})" if rate >= chance - _CHANCE_MARGIN else ""
    return (
        f"{misclassified} of {samples} samples ({rate:.0%}) are misclassified{near}. If the model was trained "
        f"on these labels, the likely cause is the class order: {mapping}. Pass --classes with the names in "
        "the order the model was trained with (a file, one name a line, or a,b,c)"
    )
