"""Regenerate the committed Python stubs from proto/parasal/v1/*.proto.

    python proto/generate.py            # writes proto/parasal/v1/, beside the .proto files
    python proto/generate.py --out DIR  # writes DIR/parasal/v1/ (used by the drift test)

The generator is pinned (grpcio-tools, see pyproject's dev extra) so the committed files
only change when the .proto files do. The stubs import each other as `parasal.v1.*`,
which is where pyproject's package-dir mapping installs them. They sit beside the
contract rather than in one of its users: the server and the client both import them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# protoc writes <out>/parasal/v1/ for -I proto, so the default output is proto/ itself.
DEFAULT_OUT = ROOT
GENERATED_SUFFIXES = (".py", ".pyi")


def generate(out: Path) -> list[Path]:
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "parasal" / "v1").glob("*.proto"))
    out.mkdir(parents=True, exist_ok=True)
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    pkg = out / "parasal" / "v1"
    (pkg / "__init__.py").write_text(
        '"""Generated gRPC stubs for parasal.v1 (do not edit; run proto/generate.py)."""\n'
    )
    return generated_files(pkg)


def generated_files(folder: Path) -> list[Path]:
    """The generated stubs in `folder` (the .proto files beside them are the sources)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in GENERATED_SUFFIXES)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
