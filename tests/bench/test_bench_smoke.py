"""`make bench` in miniature, so it cannot rot: the same code on small sizes.

It asserts what the servers saw and the shape of the results, never a time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.run import MAX_REQUESTS_PER_SERVER, SMOKE, measure

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
    assert results["max_requests_per_server_cap"] == MAX_REQUESTS_PER_SERVER
    busiest = results["max_concurrent_requests_per_server"]
    assert busiest > 0, "the stubs counted no request in flight"
    assert busiest <= MAX_REQUESTS_PER_SERVER, f"{busiest} in flight on one server"
    assert results["per_stage_serialization_held"] is True
    assert results["scale_idm_requests_per_reset"]["DELETE stage"] == 1
    # counted from the API server's audit log: what one successful one-stage reset writes
    writes = results["writes_per_reset"]
    assert writes["resets"] == SMOKE.latency_runs
    # every one of them: three status patches, two Events, kopf's annotation; one read
    for kind, count in (
        ("status_writes", 3),
        ("events", 2),
        ("metadata_writes", 1),
        ("api_writes", 6),
        ("reads_of_the_resource", 1),
    ):
        assert (writes[kind]["min"], writes[kind]["max"]) == (count, count), (kind, writes[kind])
    assert (results["status_writes_per_reset"], results["api_writes_per_reset"]) == (3, 6)
    assert results["rss_idle_mb"] > 0
    assert results["startup_s"] > 0
    for phase in ("startup", "latency", "writes", "scale"):
        assert f"{phase}.before" in results["loadavg"]

    plots.latency(results, tmp_path / "latency.png")
    plots.completion(results, tmp_path / "completion.png")
    for png in ("latency.png", "completion.png"):
        assert (tmp_path / png).read_bytes().startswith(b"\x89PNG")
