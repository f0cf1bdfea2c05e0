#!/usr/bin/env python3
"""Generates the Python stubs of the integration service's contract.

Runs grpc_tools.protoc over ../../proto (the repository's proto/ directory)
into src/centralauth_integration/centralauth/..., next to the hand-written
client. The generated tree is not committed (see .gitignore): run this after
every change to the proto files, and before building or installing the
package.

    python clients/python/generate.py

Needs grpcio-tools (the package's `dev` extra). Generate with the grpcio-tools
version that matches the grpcio installed at run time: the generated
*_pb2_grpc.py refuses to import under an older grpcio.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = (HERE / ".." / ".." / "proto").resolve()
PACKAGE_DIR = HERE / "src" / "centralauth_integration"
# The generated tree mirrors the proto packages: centralauth/integration/v1.
OUT_ROOT = PACKAGE_DIR
GENERATED_TOP = OUT_ROOT / "centralauth"
PACKAGE = "centralauth_integration"

# protoc writes imports as if the proto tree were on sys.path
# (`from centralauth.integration.v1 import integration_pb2`). They are
# rewritten here into package-qualified imports
# (`from centralauth_integration.centralauth.integration.v1 import ...`)
# rather than putting the generated tree's parent on sys.path from
# __init__.py: a sys.path entry would make `centralauth` a top-level package
# of the whole interpreter, where it could shadow or be shadowed by another
# distribution generated from the same contract (the dashboard's, the
# gateway's), and it would depend on import order. Qualified imports resolve
# the same way however the package is installed (editable, wheel, zipapp).
# google.protobuf imports are left alone: they come from the protobuf runtime.
_IMPORT_FROM = re.compile(r"^(\s*)from centralauth(\.[\w.]+)? import ", re.MULTILINE)
_IMPORT_PLAIN = re.compile(r"^(\s*)import centralauth\.([\w.]+)", re.MULTILINE)


def _qualify_imports(text: str) -> str:
    text = _IMPORT_FROM.sub(
        lambda m: f"{m.group(1)}from {PACKAGE}.centralauth{m.group(2) or ''} import ", text
    )
    return _IMPORT_PLAIN.sub(
        lambda m: f"{m.group(1)}import {PACKAGE}.centralauth.{m.group(2)}", text
    )


def main() -> int:
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        print(
            "grpcio-tools is not installed: pip install -e 'clients/python[dev]'",
            file=sys.stderr,
        )
        return 1

    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    if not protos:
        print(f"no .proto files under {PROTO_ROOT}", file=sys.stderr)
        return 1

    # Fresh every time, so a proto file that was removed leaves no module.
    if GENERATED_TOP.exists():
        shutil.rmtree(GENERATED_TOP)

    # The well-known types (google/protobuf/timestamp.proto) ship with
    # grpc_tools; protoc does not add them to the include path by itself.
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known}",
        f"--python_out={OUT_ROOT}",
        f"--pyi_out={OUT_ROOT}",
        f"--grpc_python_out={OUT_ROOT}",
        *(str(p) for p in protos),
    ]
    status = int(protoc.main(args))
    if status != 0:
        print(f"protoc failed with status {status}", file=sys.stderr)
        return status

    generated = sorted(GENERATED_TOP.rglob("*.py")) + sorted(GENERATED_TOP.rglob("*.pyi"))
    for path in generated:
        text = path.read_text(encoding="utf-8")
        fixed = _qualify_imports(text)
        if fixed != text:
            path.write_text(fixed, encoding="utf-8")

    # Every directory of the generated tree is a regular package.
    for directory in [GENERATED_TOP, *(d for d in GENERATED_TOP.rglob("*") if d.is_dir())]:
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated from proto/ by generate.py; do not edit."""\n')

    for path in sorted(GENERATED_TOP.rglob("*")):
        if path.is_file() and path.name != "__init__.py":
            print(f"generated {path.relative_to(HERE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
