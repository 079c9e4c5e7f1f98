"""ExportEditedModel: one evaluation row's edited model, streamed in chunks into a file.

The file is written to a temporary name next to ``out`` and renamed into place only once
every byte the server announced (``total_bytes`` on the first chunk) has arrived, so an
interrupted export never leaves a truncated state dict under the user's name.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from parasal.v1 import saliency_pb2 as pb

from .errors import Internal, InvalidArgument, map_grpc_errors
from .types import ExportedEdit


def write_export(stream_call, request: pb.ExportEditedModelRequest, out, *, timeout, metadata) -> ExportedEdit:
    """Run the server stream ``stream_call(request)`` and write its data to ``out``."""
    path = Path(os.fspath(out)).expanduser()
    if path.is_dir():
        raise InvalidArgument(f"out {str(path)!r} is a directory; name the file to write")
    if not path.parent.is_dir():
        raise InvalidArgument(f"out: the directory {str(path.parent)!r} does not exist")
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    first: pb.ExportEditedModelResponse | None = None
    received = 0
    try:
        with os.fdopen(handle, "wb") as file, map_grpc_errors():
            for message in stream_call(request, timeout=timeout, metadata=metadata):
                if first is None:
                    first = message
                file.write(message.data)
                received += len(message.data)
            file.flush()
            os.fsync(file.fileno())
        if first is None or received != first.total_bytes:
            expected = "nothing" if first is None else f"{first.total_bytes} bytes"
            raise Internal(f"the export stream ended after {received} bytes; the server announced {expected}")
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return ExportedEdit(
        path=str(path),
        filters=list(first.filters),
        step_size=first.step_size,
        seed=first.seed,
        total_bytes=first.total_bytes,
    )
