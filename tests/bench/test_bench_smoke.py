"""`make bench` in miniature, so it cannot rot: the same code on small sizes.

It asserts what the servers saw and the shape of the results, never a time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.run import SMOKE, measure

from bench import plots

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(600)]

KEYS = {
    "engine_p50_ms",
    "engine_p99_ms",
    "overhead_p50_ms",
    "overhead_p99_ms",
    "throughput_1000_over_50_servers_s",
    "rss_idle_mb",
    "rss_after_1000_mb",
    "status_writes_per_reset",
    "api_writes_per_reset",
    "startup_s",
    "idm_requests_per_reset",
    "max_concurrent_requests_per_server",
    "per_stage_serialization_held",
}


def test_a_small_bench_run_measures_everything_and_plots_it(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    results = measure(SMOKE, out)

    assert set(results) >= KEYS, KEYS - set(results)
    assert out.exists()
    assert len(results["raw"]["operator_s"]) == SMOKE.latency_runs
    assert len(results["raw"]["engine_s"]) == SMOKE.latency_runs
    # every resource of the scale phase became Ready, and each server saw its resets
    assert len(results["raw"]["scale_ready_s"]) == SMOKE.scale_resources
    assert results["scale_resets_seen_by_servers"] == SMOKE.scale_resources
    # counted on the servers' side: the cap and per-stage serialization held
    assert 1 <= results["max_concurrent_requests_per_server"] <= 4
    assert results["per_stage_serialization_held"] is True
    assert results["scale_idm_requests_per_reset"]["DELETE stage"] == 1
    # counted from the API server's audit log: what one successful one-stage reset writes
    writes = results["writes_per_reset"]
    assert writes["resets"] == SMOKE.latency_runs
    assert 1 <= writes["status_writes"]["min"] <= writes["status_writes"]["max"]
    assert writes["api_writes"]["min"] >= writes["status_writes"]["max"]
    assert results["rss_idle_mb"] > 0
    assert results["startup_s"] > 0
    for phase in ("startup", "latency", "writes", "scale"):
        assert f"{phase}.before" in results["loadavg"]

    plots.latency(results, tmp_path / "latency.png")
    plots.completion(results, tmp_path / "completion.png")
    for png in ("latency.png", "completion.png"):
        assert (tmp_path / png).read_bytes().startswith(b"\x89PNG")
