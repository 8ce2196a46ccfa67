"""Everything the services, the bench and the tests run is installed by the
project's own files (issue 9): each program named in a `require_binary` call
comes from a Debian package listed in deploy/debian-packages.txt, and is found
installed from that very package, not from something put on this machine by hand."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parents[2]


def listed_packages() -> set[str]:
    """deploy/debian-packages.txt and the tests-only deploy/test-packages.txt, which
    install-system-packages.sh installs together."""
    lines = [
        *(ROOT / "deploy" / "debian-packages.txt").read_text().splitlines(),
        *(ROOT / "deploy" / "test-packages.txt").read_text().splitlines(),
    ]
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def required_programs() -> set[tuple[str, str]]:
    """(program, Debian package) of every `require_binary("x", "pkg")` in the tree."""
    found: set[tuple[str, str]] = set()
    for folder in ("services", "bench", "tests", "deploy"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "id", getattr(node.func, "attr", "")) == "require_binary"
                    and len(node.args) == 2
                    and all(isinstance(a, ast.Constant) for a in node.args)
                ):
                    name, package = (a.value for a in node.args)  # type: ignore[attr-defined]
                    found.add((name, package))
    return found


def test_every_required_program_is_in_the_install_list() -> None:
    programs = required_programs()
    # Positive marker: the scan sees the programs we know are required.
    assert ("Xvnc", "tigervnc-standalone-server") in programs
    assert ("etcd", "etcd-server") in programs
    assert ("podman", "podman") in programs
    missing = {package for _, package in programs} - listed_packages()
    assert not missing, f"not in deploy/debian-packages.txt: {sorted(missing)}"


def owning_packages(path: str) -> set[str]:
    """The Debian packages that installed `path`, as dpkg recorded it: on a
    merged-/usr system dpkg may know /sbin/ip where PATH finds /usr/sbin/ip."""
    names = {path, str(Path(path).resolve())}
    names |= {n.removeprefix("/usr") if n.startswith("/usr/") else "/usr" + n for n in set(names)}
    owners: set[str] = set()
    for name in sorted(names):
        found = subprocess.run(
            ["dpkg-query", "--search", name], capture_output=True, text=True, check=False
        )
        # "package[:arch]: /path" per line.
        owners |= {line.split(":")[0] for line in found.stdout.splitlines()}
    return owners


def test_every_required_program_comes_from_its_listed_package() -> None:
    for name, package in sorted(required_programs()):
        path = require_binary(name, package)
        owners = owning_packages(path)
        assert package in owners, f"{path} is not installed by {package} (dpkg says: {owners})"


def test_ci_installs_through_the_project_script() -> None:
    """CI installs with the same script as `make run` and `make test`, one list."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert "deploy/install-system-packages.sh" in ci
    assert "apt-get install" not in ci
