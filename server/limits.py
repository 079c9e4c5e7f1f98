"""The size caps on request fields, checked on every call before any work.

A request's weight on the wire says little about its cost: 16M ``true_labels`` are 16 MB
and 6 s of CPU, a 60 MB bundle name was copied into every error message about it. So each
string field (names and ids) and each repeated field has a cap, written here once and
documented in the proto; :func:`request_problem` walks a request's set fields (set
sub-messages included) and names the first field over its cap. The error table's
interceptor (errors.py) refuses such a request with INVALID_ARGUMENT.

These caps hold whatever the bundle; the tighter ones that depend on it (labels below the
number of classes, at most one entry per layer or filter) are checked in queries.py and
evaluations.py, once the bundle is known.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

__all__ = [
    "MAX_NAME_BYTES",
    "MAX_LABELS",
    "MAX_LAYERS",
    "MAX_FILTER_ENTRIES",
    "MAX_COUNTS",
    "MAX_SELECTIONS",
    "MAX_REPEATED",
    "REPEATED_CAPS",
    "request_problem",
]

#: Every string field: bundle names, layer names, operation ids (ids are 24 characters).
MAX_NAME_BYTES = 256
#: true_labels, predicted_labels (each must also be a class of the bundle).
MAX_LABELS = 10_000
#: layers (each must also be a layer of the model, at most once).
MAX_LAYERS = 10_000
#: ExplainInputRequest.filters and ProfileVector.values: above any model's filter count
#: (a ResNet-50 has ~26k); the bundle's own count is checked once it is known.
MAX_FILTER_ENTRIES = 1 << 20
#: counts of an evaluation (each count costs a pass per selection).
MAX_COUNTS = 64
#: selections of an evaluation (three can be requested; a few repeats are harmless).
MAX_SELECTIONS = 16
#: Any other repeated field of a request.
MAX_REPEATED = 10_000

#: Repeated request fields by name -> their cap.
REPEATED_CAPS = {
    "true_labels": MAX_LABELS,
    "predicted_labels": MAX_LABELS,
    "layers": MAX_LAYERS,
    "filters": MAX_FILTER_ENTRIES,
    "values": MAX_FILTER_ENTRIES,
    "counts": MAX_COUNTS,
    "selections": MAX_SELECTIONS,
    "options": 32,  # StartExperimentRequest.options (server/experiments/service.py: MAX_OPTIONS)
}

_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def request_problem(message: Message, prefix: str = "") -> str | None:
    """What is wrong with ``message``'s sizes (the first field over its cap), or None.

    Only set fields are visited (``ListFields``), so a usual request costs a few
    microseconds; strings are measured in UTF-8 bytes."""
    for field, value in message.ListFields():
        name = prefix + field.name
        if field.is_repeated:
            cap = REPEATED_CAPS.get(field.name, MAX_REPEATED)
            if len(value) > cap:
                return f"{name} has {len(value)} entries; at most {cap}"
            if field.type == _STRING:
                for item in value:
                    problem = _string_problem(f"{name} entry", item)
                    if problem:
                        return problem
            elif field.type == _MESSAGE and field.message_type.GetOptions().map_entry:
                # A map (StartExperimentRequest.options): iterating it gives keys, not messages.
                for key, item in value.items():
                    for part in (key, item):
                        problem = _string_problem(f"{name} entry", part) if isinstance(part, str) else None
                        if problem:
                            return problem
            elif field.type == _MESSAGE:
                for item in value:
                    problem = request_problem(item, name + ".")
                    if problem:
                        return problem
        elif field.type == _STRING:
            problem = _string_problem(name, value)
            if problem:
                return problem
        elif field.type == _MESSAGE and _is_request_part(field.message_type):
            problem = request_problem(value, name + ".")
            if problem:
                return problem
    return None


def _is_request_part(descriptor: Descriptor) -> bool:
    """Our own sub-messages (ImageInput, ProfileVector); well-known types need no walk."""
    return not descriptor.full_name.startswith("google.protobuf.")


def _string_problem(name: str, value: str) -> str | None:
    # Characters first: a 60 MB string is refused without encoding it.
    if len(value) > MAX_NAME_BYTES or len(value.encode("utf-8")) > MAX_NAME_BYTES:
        return f"{name} is longer than {MAX_NAME_BYTES} bytes"
    return None
