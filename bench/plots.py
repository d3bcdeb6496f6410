"""PNG plots of a bench/results.json: latency distributions and the completion curve.

    .venv/bin/python -m bench.plots bench/results.json bench/

writes ``latency.png`` (operator vs bare engine, per reset: the stub, and real
OpenIDM when the run had it) and ``completion.png`` (resources Ready over time in
the scale phase) into the directory given.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")

import matplotlib.pyplot as plt


def _cdf(axis: Any, seconds: list[float], label: str) -> None:
    values = sorted(s * 1000 for s in seconds)
    fractions = [(i + 1) / len(values) for i in range(len(values))]
    axis.step(values, fractions, where="post", label=label)


def latency(results: dict[str, Any], path: Path) -> None:
    raw = results["raw"]
    pairs = [("IDM stub", raw["engine_s"], raw["operator_s"])]
    if raw.get("openidm_operator_s"):
        pairs.append(("OpenIDM 6.1.0", raw["openidm_engine_s"], raw["openidm_operator_s"]))
    figure, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs), 4), squeeze=False)
    for axis, (server, engine, operator) in zip(axes[0], pairs, strict=True):
        _cdf(axis, engine, f"bare engine (n={len(engine)})")
        _cdf(axis, operator, f"operator: create → Ready (n={len(operator)})")
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.set_xlabel("milliseconds per one-stage reset (log)")
        axis.set_ylabel("fraction of resets")
        axis.set_title(f"One-stage reset: {server}")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(loc="lower right")
    figure.suptitle(_caption(results), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def completion(results: dict[str, Any], path: Path, before: dict[str, Any] | None = None) -> None:
    """Resources Ready over time; with ``before``, that run's curve too."""
    config = results["config"]
    figure, axis = plt.subplots(figsize=(6, 4))
    runs = [("before", before), ("after", results)] if before else [("", results)]
    for label, run in runs:
        assert run is not None
        ready = run["raw"]["scale_ready_s"]
        name = f"{label}: {ready[-1]:.0f} s" if label else None
        axis.step(ready, range(1, len(ready) + 1), where="post", label=name)
    if before:
        axis.legend(loc="lower right")
    axis.set_xlabel("seconds since the first create")
    axis.set_ylabel("resources Ready")
    axis.set_title(
        f"{config['scale_resources']} SyncTokenResets over {config['scale_servers']} stub servers"
    )
    axis.grid(True, alpha=0.3)
    figure.suptitle(_caption(results), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _caption(results: dict[str, Any]) -> str:
    machine = results["machine"]
    load = results["loadavg"]
    before = load.get("latency.before") or next(iter(load.values()), [])
    return (
        f"{machine['commit']} · {machine['cores']} cores {machine['cpu']} · "
        f"load {' '.join(f'{x:g}' for x in before)} · {machine['date']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--before", type=Path, help="another run's results, drawn beside")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    before = json.loads(args.before.read_text()) if args.before else None
    args.directory.mkdir(parents=True, exist_ok=True)
    latency(results, args.directory / "latency.png")
    completion(results, args.directory / "completion.png", before)
    print(f"wrote {args.directory / 'latency.png'} and {args.directory / 'completion.png'}")


if __name__ == "__main__":
    main()
