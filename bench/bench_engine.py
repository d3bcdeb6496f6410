"""Engine throughput against the IDM stub on loopback. Prints numbers; asserts nothing.

    .venv/bin/python -m bench.bench_engine [--stages 200] [--concurrency 1 4 16 64]

Each stage is reset by the full procedure (read, DELETE with If-Match, liveSync,
read back) with admin headers over HTTP/1.1 keep-alive, so the figures are the
engine's own overhead plus the stub's, not IDM's: use them to compare versions
of idmsync, not to predict a production IDM. The stub runs in its own process
(in-process, the two event loops would fight over the GIL and measure that).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

from idmsync.auth import AdminCredentials, Secret
from idmsync.engine import (
    Flavour,
    IdmClient,
    ResetOptions,
    StageRef,
    make_http_client,
    run_reset,
)


def sources(count: int) -> list[str]:
    return [f"system/c{i}/account" for i in range(count)]


@contextlib.contextmanager
def stub_process(count: int) -> Iterator[str]:
    argv = [sys.executable, "-m", "tests.stub.idm_stub", "--token", "50"]
    for source in sources(count):
        argv += ["--source", source]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        yield line.strip().removeprefix("IDM_URL=")
    finally:
        process.terminate()
        process.wait(10)


async def one_round(url: str, count: int, concurrency: int) -> tuple[float, list[float]]:
    semaphore = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    async with make_http_client(max_connections=concurrency) as http:
        idm = IdmClient(
            url,
            AdminCredentials("openidm-admin", Secret("openidm-admin")),
            http,
            flavour=Flavour.IDM7,
        )

        async def reset(source: str) -> None:
            async with semaphore:
                started = time.perf_counter()
                await run_reset(
                    idm, [StageRef(source.replace("/", "").upper(), source)], ResetOptions()
                )
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(reset(source) for source in sources(count)))
        return time.perf_counter() - started, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    args = parser.parse_args()
    print(
        f"{'concurrency':>11} {'stages':>6} {'seconds':>8} {'resets/s':>9} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'requests':>8}"
    )
    for concurrency in args.concurrency:
        with stub_process(args.stages) as url:
            elapsed, latencies = asyncio.run(one_round(url, args.stages, concurrency))
        latencies.sort()
        p95 = latencies[int(len(latencies) * 0.95) - 1]
        print(
            f"{concurrency:>11} {args.stages:>6} {elapsed:>8.2f} "
            f"{args.stages / elapsed:>9.1f} {statistics.median(latencies) * 1000:>7.1f} "
            f"{p95 * 1000:>7.1f} {args.stages * 4:>8}"
        )


if __name__ == "__main__":
    main()
