"""The CLI as a package: sdist and wheel build, twine accepts them, and the wheel installed into
a clean virtualenv (its dependencies from the hashed requirements.lock) runs.

No servers; needs uv (the Makefile's, or IDMSYNC_UV) and the dev group's build and twine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.harness.controlplane import cache_dir

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]


def run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_"))},
    )
    assert completed.returncode == 0, f"{argv}\n{completed.stdout}\n{completed.stderr}"
    return completed


def uv() -> str:
    found = (
        os.environ.get("IDMSYNC_UV") or shutil.which("uv") or str(cache_dir() / "uv" / "bin" / "uv")
    )
    if not os.access(found, os.X_OK):
        pytest.fail(f"uv not found ({found}): run `make venv`", pytrace=False)
    return found


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m build`: the sdist, then the wheel built from the sdist (so the sdist is whole)."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, REPO)
    return out


def _locked(path: Path) -> set[str]:
    return set(re.findall(r"^([a-z0-9_.-]+==[^\s;]+)", path.read_text(), re.MULTILINE))


def test_sdist_and_wheel_pass_twine_check(dist: Path) -> None:
    sdist = dist / f"idmsync_operator-{VERSION}.tar.gz"
    wheel = dist / f"idmsync_operator-{VERSION}-py3-none-any.whl"
    assert sorted(p.name for p in dist.iterdir()) == sorted([sdist.name, wheel.name])
    checked = run(sys.executable, "-m", "twine", "check", "--strict", sdist, wheel)
    assert checked.stdout.count("PASSED") == 2, checked.stdout
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        entry_points = archive.read(f"idmsync_operator-{VERSION}.dist-info/entry_points.txt")
    assert tops == {"idmsync", f"idmsync_operator-{VERSION}.dist-info"}
    assert b"idmsync = idmsync.cli:main" in entry_points
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    assert f"idmsync_operator-{VERSION}/operator/idmsync/cli.py" in names
    assert not [n for n in names if "/tests/" in n], "the sdist carries no test suite"


def test_runtime_lock_is_what_the_tests_ran_with() -> None:
    """The image and a clean install take requirements.lock: the same pins as the dev lock."""
    runtime, dev = _locked(REPO / "requirements.lock"), _locked(REPO / "requirements-dev.lock")
    assert {"kopf", "kubernetes", "httpx", "pydantic"} <= {p.split("==")[0] for p in runtime}
    assert runtime <= dev, f"run `make lock`: {sorted(runtime - dev)}"


def test_the_wheel_in_a_clean_virtualenv_runs_the_cli(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    run(uv(), "venv", "--quiet", "--python", sys.executable, venv)
    run(uv(), "pip", "sync", "--quiet", "--python", python, "--require-hashes",
        REPO / "requirements.lock")  # fmt: skip
    run(uv(), "pip", "install", "--quiet", "--python", python, "--no-deps",
        dist / f"idmsync_operator-{VERSION}-py3-none-any.whl")  # fmt: skip
    run(uv(), "pip", "check", "--python", python)  # the wheel's requirements are all met

    idmsync = venv / "bin" / "idmsync"
    assert run(idmsync, "--version", cwd=tmp_path).stdout == f"idmsync {VERSION}\n"
    reset_help = run(idmsync, "reset", "--help", cwd=tmp_path).stdout
    for option in ("--url", "--source", "--all", "--dry-run", "--set-token", "--output"):
        assert option in reset_help
    where = run(python, "-c", "import idmsync; print(idmsync.__file__)", cwd=tmp_path).stdout
    assert where.startswith(str(venv)), f"imported from {where}, not the installed wheel"
