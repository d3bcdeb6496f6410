"""The Argo CD health script's own tests (health_test.yaml + testdata, Argo CD's layout), run in
gopher-lua the way Argo CD runs them, plus kstatus's verdict and Flux's (with the
healthCheckExprs of manifests/health/flux-kustomization.yaml) on the same objects.

No servers: only the tools/health binary (built by `make health-tool`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.harness.health import HEALTH_LUA, HealthTool, Judgement, Verdict

CUSTOMIZATION = HEALTH_LUA.parent
ARGOCD_CM = HEALTH_LUA.parents[2] / "argocd-cm.yaml"
CASES = yaml.safe_load((CUSTOMIZATION / "health_test.yaml").read_text())["tests"]

#: What Flux (kstatus) concludes from the same objects. Where it differs from Argo CD's verdict
#: (pending, rerun-requested) docs/gitops.md says why and what to add to a Flux Kustomization.
KSTATUS = {
    "pending": "Current",
    "running": "InProgress",
    "retrying": "InProgress",
    "succeeded": "Current",
    "failed": "Failed",
    "failed-phase-only": "InProgress",
    "deleting": "Terminating",
    "generation-lag": "InProgress",
    "rerun-requested": "Current",
}


#: Flux with our healthCheckExprs: the gaps kstatus leaves are closed. Without a status the
#: expressions cannot be evaluated; Flux reports Unknown and waits for the operator.
FLUX = {
    "pending": "error: InProgress: no such attribute(s): status.phase",
    "running": "InProgress",
    "retrying": "InProgress",
    "succeeded": "Current",
    "failed": "Failed",
    "failed-phase-only": "Failed",
    "deleting": "InProgress",
    "generation-lag": "InProgress",
    "rerun-requested": "InProgress",
}


@pytest.fixture(scope="module")
def judged(health_tool: HealthTool) -> dict[str, Judgement]:
    paths = [CUSTOMIZATION / case["inputPath"] for case in CASES]
    return {
        Path(case["inputPath"]).stem: judgement
        for case, judgement in zip(CASES, health_tool.judge_files(*paths), strict=True)
    }


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_argocd_health(case: dict[str, object], judged: dict[str, Judgement]) -> None:
    expected = case["healthStatus"]
    assert isinstance(expected, dict)
    judgement = judged[Path(str(case["inputPath"])).stem]
    assert judgement.argocd == Verdict(expected["status"], expected["message"])
    # a built-in script gets every standard library; a ConfigMap script only base, table, os
    assert judgement.argocd_builtin == judgement.argocd


@pytest.mark.parametrize("name", sorted(KSTATUS))
def test_kstatus(name: str, judged: dict[str, Judgement]) -> None:
    assert judged[name].kstatus.status == KSTATUS[name]


@pytest.mark.parametrize("name", sorted(FLUX))
def test_flux_health_check_exprs(name: str, judged: dict[str, Judgement]) -> None:
    assert judged[name].flux == FLUX[name]


def test_every_testdata_file_is_a_case_and_every_verdict_is_covered() -> None:
    listed = {Path(case["inputPath"]).name for case in CASES}
    assert listed == {p.name for p in (CUSTOMIZATION / "testdata").glob("*.yaml")}
    assert set(KSTATUS) == set(FLUX) == {Path(name).stem for name in listed}
    assert {case["healthStatus"]["status"] for case in CASES} == {
        "Healthy",
        "Progressing",
        "Degraded",
    }


def test_argocd_cm_snippet_carries_the_script_unchanged() -> None:
    config = yaml.safe_load(ARGOCD_CM.read_text())
    assert (config["kind"], config["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    key = "resource.customizations.health.idmsync.dev_SyncTokenReset"
    assert config["data"] == {key: HEALTH_LUA.read_text()}, "run `make argocd-cm`"


@pytest.mark.harness  # the runner's, not the script's: `make harness-check`
def test_a_script_that_needs_the_string_library_fails_as_in_argo_cd(
    health_tool: HealthTool, tmp_path: Path
) -> None:
    """Proves the runner opens only what an argocd-cm script gets: our script must not rely on
    more (string.* is nil there), or Argo CD would report an error instead of a health."""
    script = tmp_path / "health.lua"
    script.write_text('return {status = "Healthy", message = string.format("%d", 1)}\n')
    tool = HealthTool(health_tool.executable, script)
    with pytest.raises(AssertionError, match="attempt to index a non-table object"):
        tool.judge_files(CUSTOMIZATION / "testdata" / "succeeded.yaml")
