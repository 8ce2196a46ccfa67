"""Generate the Python code for every proto under protos/ into the `baton` package.

Usage: python protos/generate.py           write baton/<package>/ (make proto)
       python protos/generate.py --check   exit 1 if they differ from the protos
                                            (make proto-check, part of make lint)

One `baton` package at the repository root holds both the generated stubs
(`baton/session/v1`, `baton/display/v1`, `baton/automation/v1`: one folder per
folder of protos/baton/, generated code only) and the hand-written client
(`baton/client/`, README.md "Python client"), so that an editable and a plain
install find both. Only the generated folders are replaced; nothing else in
`baton/` is touched.
"""

from __future__ import annotations

import contextlib
import filecmp
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE = PROTO_ROOT.parent / "baton"
# mypy-protobuf's plugins are installed beside the interpreter.
BIN = Path(sys.executable).parent


def generated_packages() -> list[str]:
    """The folders of `baton/` that hold generated code: one per proto package."""
    return sorted(p.name for p in (PROTO_ROOT / "baton").iterdir() if p.is_dir())


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """protoc's plugins report every file they write on stderr (the fd, inherited)."""
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def generate(out_dir: Path, quiet: bool = False) -> None:
    """Every proto's code into `out_dir` (made empty first), as `out_dir/baton/...`."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{Path(grpc_tools.__file__).parent / '_proto'}",
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    with _quiet_stderr() if quiet else contextlib.nullcontext():
        status = protoc.main(args)
    if status != 0:
        raise SystemExit("protoc failed")
    # Regular packages (not namespace packages) so that mypy and importers
    # resolve `baton.*` the same way everywhere.
    for folder in (out_dir / "baton").rglob("*"):
        if folder.is_dir():
            (folder / "__init__.py").touch()


def write(package: Path = PACKAGE) -> None:
    """Replace the generated folders of `package` with freshly generated ones."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for name in generated_packages():
            shutil.rmtree(package / name, ignore_errors=True)
            shutil.move(Path(tmp) / "baton" / name, package / name)


def _differences(left: Path, right: Path) -> list[str]:
    compared = filecmp.dircmp(left, right, ignore=["__pycache__"])
    found = [str(left / name) for name in compared.left_only + compared.right_only]
    found += [str(left / name) for name in compared.diff_files + compared.funny_files]
    for name in compared.common_dirs:
        found += _differences(left / name, right / name)
    return found


def check(package: Path = PACKAGE) -> list[str]:
    """The generated files of `package` that differ from what the protos make."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), quiet=True)
        found: list[str] = []
        for name in generated_packages():
            if not (package / name).is_dir():
                found.append(str(package / name))
            else:
                found += _differences(package / name, Path(tmp) / "baton" / name)
        return found


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        stale = check()
        if stale:
            print("\n".join(stale))
            raise SystemExit(
                "baton/'s generated code is out of date with protos/: run 'make proto' and commit"
            )
    elif sys.argv[1:]:
        raise SystemExit(__doc__)
    else:
        write()
