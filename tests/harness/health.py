"""How GitOps tools judge a SyncTokenReset, computed with their own code.

``tools/health`` is a small Go program that runs our Argo CD health script in gopher-lua the
way Argo CD's controller does, computes the object's kstatus (what Flux and kpt use) with
sigs.k8s.io/cli-utils, and evaluates the healthCheckExprs of our Flux Kustomization example
with cel-go set up as Flux sets it up. ``tools/health/build.sh`` builds it once per content
hash into the cache (``make health-tool``; about a minute cold) and prints its path.

Fixture:
    health_tool  session  a HealthTool; ``judge(objects)`` returns one Judgement per object
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tools" / "health" / "build.sh"
HEALTH = REPO_ROOT / "manifests" / "health"
HEALTH_LUA = HEALTH / "idmsync.dev" / "SyncTokenReset" / "health.lua"
FLUX_KUSTOMIZATION = HEALTH / "flux-kustomization.yaml"


@dataclass(frozen=True)
class Verdict:
    status: str
    message: str


@dataclass(frozen=True)
class Judgement:
    """Argo CD's health (argocd-cm libraries and built-in libraries), kstatus's status, and
    Flux's with our healthCheckExprs (its status, or ``error: ...`` when CEL could not answer:
    Flux then reports Unknown and keeps waiting)."""

    argocd: Verdict
    argocd_builtin: Verdict
    kstatus: Verdict
    flux: str


class HealthTool:
    def __init__(self, executable: Path, script: Path = HEALTH_LUA) -> None:
        self.executable = executable
        self.script = script

    @classmethod
    def build(cls) -> HealthTool:
        completed = subprocess.run(
            [str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=900, check=False
        )
        if completed.returncode != 0:
            raise RuntimeError(f"tools/health/build.sh failed:\n{completed.stderr}")
        return cls(Path(completed.stdout.strip().splitlines()[-1]))

    def judge_files(self, *paths: Path) -> list[Judgement]:
        return self._run([str(p) for p in paths], None)

    def judge(self, *objects: dict[str, Any]) -> list[Judgement]:
        listed = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        return self._run(["-"], json.dumps(listed))

    def _run(self, arguments: list[str], stdin: str | None) -> list[Judgement]:
        completed = subprocess.run(
            [
                str(self.executable),
                *("-script", str(self.script)),
                *("-flux", str(FLUX_KUSTOMIZATION)),
                *arguments,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr
        judged = []
        for item in json.loads(completed.stdout):
            assert "argocdError" not in item, f"{item['name']}: {item['argocdError']}"
            assert "kstatusError" not in item, f"{item['name']}: {item['kstatusError']}"
            judged.append(
                Judgement(
                    argocd=Verdict(**item["argocd"]),
                    argocd_builtin=Verdict(**item["argocdBuiltin"]),
                    kstatus=Verdict(**item["kstatus"]),
                    flux=item["flux"].get("status") or f"error: {item['flux']['error']}",
                )
            )
        return judged


@pytest.fixture(scope="session")
def health_tool() -> HealthTool:
    try:
        return HealthTool.build()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        pytest.fail(f"{error}\nRun `make health-tool` (needs Go).", pytrace=False)
