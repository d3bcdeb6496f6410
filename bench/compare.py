"""Two bench/results.json side by side, as the Markdown table docs/benchmarks.md shows.

.venv/bin/python -m bench.compare bench/baseline/results.json bench/results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: (key, what, goal)
ROWS = [
    ("engine_p50_ms", "bare engine, one-stage reset, p50 (ms)", ""),
    ("engine_p99_ms", "bare engine, p99 (ms)", ""),
    ("overhead_p50_ms", "operator overhead over the engine, p50 (ms)", "≤ 50"),
    ("overhead_p99_ms", "operator overhead, p99 (ms)", "≤ 250"),
    ("throughput_1000_over_50_servers_s", "1,000 resources over 50 servers, all Ready (s)", "≤ 30"),
    ("rss_idle_mb", "operator RSS idle (MB)", "≤ 100"),
    ("rss_after_1000_mb", "operator RSS after the 1,000 (MB)", "≤ 130"),
    ("status_writes_per_reset", "status writes per one-stage reset", "≤ 3"),
    ("api_writes_per_reset", "API writes per one-stage reset", "≤ 6"),
    ("startup_s", "start-up: process start → first resource read (s)", "≤ 3"),
    ("operator_cpu_ms_per_reset", "operator CPU per reset, one at a time (ms)", ""),
    ("operator_cpu_ms_per_reset_at_scale", "operator CPU per reset, 1,000 at once (ms)", ""),
    ("max_concurrent_requests_per_server", "most requests in flight on one server (cap 4)", "≤ 4"),
    ("per_stage_serialization_held", "per-stage serialization held", "yes"),
]


def cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    return f"{value:g}" if isinstance(value, float) else str(value)


def table(before: dict[str, Any], after: dict[str, Any]) -> str:
    lines = ["| | before | after | goal |", "|---|---:|---:|---|"]
    for key, what, goal in ROWS:
        lines.append(f"| {what} | {cell(before.get(key))} | {cell(after.get(key))} | {goal} |")
    real = [r.get("openidm") or {} for r in (before, after)]
    for key, what in (
        ("engine_p50_ms", "OpenIDM 6.1.0: bare engine p50 (ms)"),
        ("operator_p50_ms", "OpenIDM 6.1.0: operator create → Ready p50 (ms)"),
        ("overhead_p50_ms", "OpenIDM 6.1.0: overhead p50 (ms)"),
        ("overhead_p99_ms", "OpenIDM 6.1.0: overhead p99 (ms)"),
    ):
        lines.append(f"| {what} | {cell(real[0].get(key))} | {cell(real[1].get(key))} | |")
    loads = [r["loadavg"].get("latency.before", []) for r in (before, after)]
    lines.append(
        "| load average (1, 5, 15 min) at the latency phase | "
        + " | ".join(" ".join(f"{x:g}" for x in load) for load in loads)
        + " | |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    print(table(json.loads(args.before.read_text()), json.loads(args.after.read_text())))


if __name__ == "__main__":
    main()
