"""Many IDM stubs in one process, on one event loop, each on its own loopback port.

    python -m bench.stub_farm --servers 50 --sources 4 [--delay-ms 20 --undelayed 1]

Prints one JSON line ``{"ports": [...], "sources": [...]}``, then answers commands
on stdin, one per line, each with one JSON line on stdout:

- ``stats``: what every server saw, counted on the server side: requests by kind,
  the most requests one server had in flight at once, and per stage the most
  requests in flight at once and whether its requests formed whole reset
  sequences one after the other (``GET``, ``DELETE``, ``POST liveSync``,
  ``GET``...), i.e. whether two resets of that stage ever interleaved;
- ``clear``: forget the counts (between benchmark phases);
- ``quit``.

It runs in a process of its own so the benchmark measures idmsync, not the two
event loops fighting over one GIL. ``--delay-ms`` makes every server but the first
``--undelayed`` take that long over each request, as a real IDM does (so requests
overlap, and the per-server cap is put to the test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from tests.stub.idm_stub import STAGES, IdmStub

SYSTEM = "/openidm/system/"


def source_names(count: int) -> list[str]:
    return [f"system/bench{i}/account" for i in range(count)]


def stage_of(source: str) -> str:
    return source.replace("/", "").upper()


@dataclass
class Tally:
    """One server's requests, as it saw them."""

    kinds: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    stage_in_flight: Counter[str] = field(default_factory=Counter)
    stage_max_in_flight: Counter[str] = field(default_factory=Counter)
    #: per stage, the kinds of its requests in arrival order
    stage_log: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def summary(self) -> dict[str, Any]:
        return {
            "requests": dict(self.kinds),
            "max_in_flight": self.max_in_flight,
            "stages": {
                stage: {
                    "requests": len(log),
                    "max_in_flight": self.stage_max_in_flight[stage],
                    "resets": log.count("DELETE"),
                    "serialized": whole_sequences(log),
                }
                for stage, log in self.stage_log.items()
            },
        }


def whole_sequences(log: list[str]) -> bool:
    """Is the log GET (DELETE POST GET+)... with nothing of one reset inside another's?

    A reset reads, deletes, triggers and reads until the stage is back; the next one
    starts with its read. Two interleaved resets put a second DELETE before the first
    one's POST, or a POST right after a read.
    """
    expect = {"GET": {"GET", "DELETE"}, "DELETE": {"POST"}, "POST": {"GET"}}
    previous = "POST"  # so the log must start with a GET
    for kind in log:
        if kind not in expect[previous]:
            return False
        previous = kind
    return previous == "GET"


def classify(method: str, path: str) -> tuple[str, str | None]:
    """(kind of request, stage it concerns)."""
    if path.startswith(STAGES + "/"):
        return f"{method} stage", path[len(STAGES) + 1 :]
    if path.startswith(SYSTEM) and method == "POST":
        return "POST liveSync", stage_of(path.removeprefix("/openidm/"))
    if path == "/openidm/info/version":
        return "GET version", None
    return f"{method} other", None


def tracking(tally: Tally, delay: float) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        kind, stage = classify(request.method, request.path)
        tally.kinds[kind] += 1
        tally.in_flight += 1
        tally.max_in_flight = max(tally.max_in_flight, tally.in_flight)
        if stage is not None:
            tally.stage_log[stage].append(request.method)
            tally.stage_in_flight[stage] += 1
            tally.stage_max_in_flight[stage] = max(
                tally.stage_max_in_flight[stage], tally.stage_in_flight[stage]
            )
        try:
            if delay:
                await asyncio.sleep(delay)
            response: web.StreamResponse = await handler(request)
            return response
        finally:
            tally.in_flight -= 1
            if stage is not None:
                tally.stage_in_flight[stage] -= 1

    return middleware


async def serve(servers: int, sources: int, delay: float, undelayed: int) -> None:
    stubs: list[IdmStub] = []
    tallies: list[Tally] = []
    runners: list[web.AppRunner] = []
    ports: list[int] = []
    names = source_names(sources)
    for index in range(servers):
        stub, tally = IdmStub(), Tally()
        for source in names:
            stub.add_source(source, latest=105)
            stub.put_stage(stage_of(source), 100)
        app = stub._make_app()
        app.middlewares.insert(0, tracking(tally, 0.0 if index < undelayed else delay))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        ports.append(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        stubs.append(stub)
        tallies.append(tally)
        runners.append(runner)
    print(json.dumps({"ports": ports, "sources": names}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        command = line.strip()
        if command == "stats":
            print(json.dumps([t.summary() for t in tallies]), flush=True)
        elif command == "clear":
            # in place: each server's middleware holds its tally
            for stub, tally in zip(stubs, tallies, strict=True):
                stub.clear_log()
                tally.kinds.clear()
                tally.max_in_flight = tally.in_flight
                tally.stage_max_in_flight.clear()
                tally.stage_log.clear()
            print(json.dumps({"cleared": True}), flush=True)
        elif command in ("quit", ""):
            break
    for runner in runners:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=1)
    parser.add_argument("--sources", type=int, default=1)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--undelayed", type=int, default=0, help="the first N answer at once")
    args = parser.parse_args()
    asyncio.run(serve(args.servers, args.sources, args.delay_ms / 1000, args.undelayed))


if __name__ == "__main__":
    main()
