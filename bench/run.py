"""What the operator costs over the bare engine, at scale, and how small it runs.

    .venv/bin/python -m bench.run [--smoke] [--no-openidm] [--out bench/results.json]

One run, on this machine, with real servers: a kube-apiserver + etcd (the test
harness, with an audit log), ``idmsync run`` as a subprocess authenticated as the
manifests' ServiceAccount, IDM stubs in a process of their own (bench/stub_farm.py)
and, unless ``--no-openidm``, real OpenIDM 6.1.0 + OpenDJ for single-reset latency.

Phases, in this order, each recording the load average before and after:

1. start-up: a resource exists before the operator starts; process spawn → the
   operator's first read of it (from the API server's audit log), and → Ready;
   then resident memory while idle;
2. latency: the same one-stage reset by the bare engine (in this process) and by
   the operator (create → Ready=True, seen through a watch), alternated, against
   the same stub server;
3. writes: the audit log's writes by the operator's ServiceAccount, per resource:
   status patches, Events, annotation patches; and its reads;
4. scale: N resources over M stub servers (each with K stages): time until every
   one is Ready, the completion curve, server-side request counts, the most
   requests in flight on one server against the cap, per-stage serialization; then
   resident memory;
5. OpenIDM: the latency pair against real OpenIDM (its liveSync reads OpenDJ).

Numbers, not verdicts: nothing here asserts a time (the machine is shared). The
smoke configuration (``--smoke``, run by ``make test``) is the same code on small
sizes; its test checks structure and server-side facts only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import json
import os
import platform
import secrets
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from tests.harness.controlplane import ControlPlane
from tests.harness.operator_process import OperatorProcess

from idmsync.auth import AdminCredentials, Secret
from idmsync.engine import (
    Flavour,
    IdmClient,
    ResetOptions,
    ServerVersions,
    StageRef,
    make_http_client,
    run_reset,
)

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "manifests" / "crd" / "synctokenresets.idmsync.dev.yaml"
OPERATOR_USER = "system:serviceaccount:idmsync-system:idmsync-operator"
GROUP_PATH = "/apis/idmsync.dev/v1alpha1"
ADMIN_USER = "openidm-admin"
ADMIN_PASSWORD = "openidm-admin"  # the stub's default
WRITE_VERBS = {"create", "update", "patch", "delete"}
MAX_REQUESTS_PER_SERVER = 4  # the operator's default cap, set explicitly below


@dataclass(frozen=True)
class Config:
    latency_runs: int = 100
    scale_resources: int = 1000
    scale_servers: int = 50
    #: more stages per server than the cap on requests per server, so the cap is tested
    sources_per_server: int = 8
    #: how long each scale-phase stub server takes over a request (a real IDM is not instant)
    scale_delay_ms: float = 20.0
    openidm: bool = True
    openidm_runs: int = 30
    timeout: float = 600.0  # for the scale phase to finish
    #: py-spy's collapsed stacks of the operator during the scale phase go here
    profile: str | None = None
    #: more IDMSYNC_* settings for the operator
    operator_env: dict[str, str] = field(default_factory=dict)


SMOKE = Config(
    latency_runs=5,
    scale_resources=40,
    scale_servers=4,
    sources_per_server=6,
    openidm=False,
    openidm_runs=0,
    timeout=120.0,
)


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def percentile(values: list[float], pct: float) -> float:
    """Nearest rank: the smallest value with at least pct% of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_spec(source: str, service: str = "idm", api: str = "IDM7") -> dict[str, Any]:
    return {
        "target": {"service": {"name": service, "port": "http"}},
        "auth": {"adminSecretRef": {"name": "idm-admin"}},
        "api": api,
        "stages": {"sources": [source]},
    }


# --------------------------------------------------------------------------- the API server


class Api:
    """Admin access to the control plane: setup through kubectl, timed calls through httpx."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        pki = plane.workdir / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self.http = httpx.AsyncClient(
            base_url=plane.server,
            verify=context,
            timeout=httpx.Timeout(60, read=None),
            limits=httpx.Limits(max_connections=32),
        )

    def apply(self, *documents: dict[str, Any]) -> None:
        self.plane.kubectl.apply(yaml.safe_dump_all(documents))

    def namespace(self, name: str, port_by_service: dict[str, int]) -> None:
        """A namespace with the admin Secret and one Service per stub server."""
        self.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "idm-admin", "namespace": name},
                "data": {
                    "username": base64.b64encode(ADMIN_USER.encode()).decode(),
                    "password": base64.b64encode(ADMIN_PASSWORD.encode()).decode(),
                },
            },
            *(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": service, "namespace": name},
                    "spec": {"ports": [{"name": "http", "port": port}]},
                }
                for service, port in port_by_service.items()
            ),
        )

    async def create_reset(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        body = {
            "apiVersion": "idmsync.dev/v1alpha1",
            "kind": "SyncTokenReset",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
        response = await self.http.post(
            f"{GROUP_PATH}/namespaces/{namespace}/synctokenresets", json=body
        )
        response.raise_for_status()

    async def close(self) -> None:
        await self.http.aclose()


class Watcher:
    """Watches every SyncTokenReset; notes when each is first seen Ready=True."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.ready: dict[tuple[str, str], float] = {}
        self.failed: dict[tuple[str, str], str] = {}
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        listed = await self.api.http.get(f"{GROUP_PATH}/synctokenresets")
        listed.raise_for_status()
        version = listed.json()["metadata"]["resourceVersion"]
        for item in listed.json()["items"]:
            self._note(item)
        self._task = asyncio.create_task(self._watch(version))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _watch(self, version: str) -> None:
        while True:
            params = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true"}
            async with self.api.http.stream(
                "GET", f"{GROUP_PATH}/synctokenresets", params=params
            ) as response:
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event["object"]
                    version = obj["metadata"].get("resourceVersion", version)
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._note(obj)
                        async with self._changed:
                            self._changed.notify_all()

    def _note(self, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        status = obj.get("status") or {}
        for condition in status.get("conditions") or []:
            if condition["type"] == "Ready" and condition["status"] == "True":
                self.ready.setdefault(key, now)
        if status.get("phase") == "Failed":
            self.failed.setdefault(key, str(status.get("conditions")))

    async def wait(self, keys: list[tuple[str, str]], limit: float) -> None:
        """Until every key is Ready (raises on a Failed one, or on timeout)."""

        def done() -> bool:
            broken = [k for k in keys if k in self.failed]
            if broken:
                raise RuntimeError(f"{broken[0]} failed: {self.failed[broken[0]]}")
            return all(k in self.ready for k in keys)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(done), limit)


# --------------------------------------------------------------------------- the stub farm


class StubFarm:
    """bench/stub_farm.py in its own process."""

    def __init__(self, servers: int, sources: int, delay_ms: float) -> None:
        argv = [sys.executable, "-m", "bench.stub_farm"]
        argv += ["--servers", str(servers), "--sources", str(sources)]
        # the latency phase's server answers at once: the engine's figure is the floor
        argv += ["--delay-ms", str(delay_ms), "--undelayed", "1"]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        hello = json.loads(self._read())
        self.ports: list[int] = hello["ports"]
        self.sources: list[str] = hello["sources"]

    def _read(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"stub farm exited {self.process.wait()}")
        return line

    def command(self, command: str) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return json.loads(self._read())

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --------------------------------------------------------------------------- the audit log


@dataclass
class Writes:
    status: int = 0
    events: int = 0
    metadata: int = 0  # patches of the resource itself: kopf's annotations, finalizers
    reads: int = 0

    @property
    def total(self) -> int:
        return self.status + self.events + self.metadata


def audit_by_resource(plane: ControlPlane, namespace: str) -> dict[str, Writes]:
    """The operator's requests about each SyncTokenReset in ``namespace``, per its name."""
    counts: dict[str, Writes] = {}
    for event in plane.audit_events():
        if event.get("user", {}).get("username") != OPERATOR_USER:
            continue
        ref = event.get("objectRef") or {}
        if ref.get("namespace") != namespace:
            continue
        verb = event.get("verb")
        if ref.get("resource") == "events":
            involved = (event.get("requestObject") or {}).get("involvedObject") or {}
            name = involved.get("name")
            if name and verb in WRITE_VERBS:
                counts.setdefault(name, Writes()).events += 1
            continue
        if ref.get("resource") != "synctokenresets" or not ref.get("name"):
            continue
        writes = counts.setdefault(ref["name"], Writes())
        if verb in WRITE_VERBS:
            if ref.get("subresource") == "status":
                writes.status += 1
            else:
                writes.metadata += 1
        elif verb == "get":
            writes.reads += 1
    return counts


def operator_reads(plane: ControlPlane, namespace: str) -> Counter[str]:
    """Every read the operator made in ``namespace``, by resource."""
    reads: Counter[str] = Counter()
    for event in plane.audit_events():
        ref = event.get("objectRef") or {}
        if (
            event.get("user", {}).get("username") == OPERATOR_USER
            and ref.get("namespace") == namespace
            and event.get("verb") == "get"
        ):
            reads[ref.get("resource", "?")] += 1
    return reads


def first_request_about(plane: ControlPlane, namespace: str, name: str) -> float | None:
    """Wall-clock time the operator first asked the API server about this resource."""
    for event in plane.audit_events():
        ref = event.get("objectRef") or {}
        if (
            event.get("user", {}).get("username") == OPERATOR_USER
            and ref.get("namespace") == namespace
            and ref.get("name") == name
        ):
            stamp = datetime.datetime.fromisoformat(event["requestReceivedTimestamp"])
            return stamp.timestamp()
    return None


async def settle(plane: ControlPlane, seconds: float = 2.0, limit: float = 30.0) -> None:
    """Wait until the audit log has not grown for ``seconds`` (Events are posted late)."""
    deadline = time.monotonic() + limit
    size = -1
    while time.monotonic() < deadline:
        now = plane.audit_log.stat().st_size
        if now == size:
            return
        size = now
        await asyncio.sleep(seconds)


# --------------------------------------------------------------------------- the phases


@dataclass
class Results:
    config: dict[str, Any]
    machine: dict[str, Any] = field(default_factory=dict)
    loadavg: dict[str, list[float]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def phase(self, name: str) -> contextlib.AbstractContextManager[None]:
        @contextlib.contextmanager
        def mark() -> Iterator[None]:
            self.loadavg[f"{name}.before"] = loadavg()
            started = time.monotonic()
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            yield
            self.loadavg[f"{name}.after"] = loadavg()
            seconds = time.monotonic() - started
            print(f"bench: {name} done in {seconds:.1f}s", file=sys.stderr, flush=True)

        return mark()

    def document(self) -> dict[str, Any]:
        return {
            **self.figures,
            "config": self.config,
            "machine": self.machine,
            "loadavg": self.loadavg,
            "raw": self.raw,
        }


class EngineRunner:
    """The bare engine: the reset the operator makes, from this process, pooled like it."""

    def __init__(self, url: str, *, flavour: Flavour, user: str, password: str) -> None:
        self.url = url
        self.flavour = flavour
        self.credentials = AdminCredentials(user, Secret(password))
        self.http = make_http_client(max_connections=MAX_REQUESTS_PER_SERVER)
        self.versions = ServerVersions()  # as the operator's context: shared by every reset

    async def reset(self, source: str) -> float:
        started = time.monotonic()
        client = IdmClient(
            self.url, self.credentials, self.http, flavour=self.flavour, versions=self.versions
        )
        stage = StageRef(source.replace("/", "").upper(), source)
        outcome = await run_reset(client, [stage], ResetOptions())
        await client.version()  # as the operator does, for status.server (cached per server)
        assert outcome.stages[0].step == "Done", outcome
        return time.monotonic() - started

    async def close(self) -> None:
        await self.http.aclose()


async def latency_pair(
    api: Api,
    watcher: Watcher,
    engine: EngineRunner,
    namespace: str,
    source: str,
    runs: int,
    prefix: str,
    *,
    api_flavour: str = "IDM7",
) -> tuple[list[float], list[float]]:
    """Alternate engine and operator resets of the same stage; one warm-up each."""
    engine_times: list[float] = []
    operator_times: list[float] = []
    for run in range(runs + 1):
        engine_time = await engine.reset(source)
        key = (namespace, f"{prefix}-{run:03}")
        started = time.monotonic()
        await api.create_reset(namespace, key[1], reset_spec(source, api=api_flavour))
        await watcher.wait([key], 120)
        if run:  # the first of each is a warm-up
            engine_times.append(engine_time)
            operator_times.append(watcher.ready[key] - started)
    return engine_times, operator_times


def latency_figures(engine: list[float], operator: list[float]) -> dict[str, float]:
    figures = {
        "engine_p50_ms": ms(percentile(engine, 50)),
        "engine_p99_ms": ms(percentile(engine, 99)),
        "operator_p50_ms": ms(percentile(operator, 50)),
        "operator_p99_ms": ms(percentile(operator, 99)),
    }
    figures["overhead_p50_ms"] = round(figures["operator_p50_ms"] - figures["engine_p50_ms"], 2)
    figures["overhead_p99_ms"] = round(figures["operator_p99_ms"] - figures["engine_p99_ms"], 2)
    return figures


def per_reset(counts: dict[str, Writes], names: list[str]) -> dict[str, Any]:
    rows = [counts.get(name, Writes()) for name in names]
    total = [row.total for row in rows]
    status = [row.status for row in rows]
    return {
        "resets": len(rows),
        "status_writes": _spread(status),
        "api_writes": _spread(total),
        "events": _spread([row.events for row in rows]),
        "metadata_writes": _spread([row.metadata for row in rows]),
        "reads_of_the_resource": _spread([row.reads for row in rows]),
    }


def _spread(values: list[int]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "min": 0, "max": 0}
    return {"mean": round(statistics.mean(values), 2), "min": min(values), "max": max(values)}


def requests_per_reset(tallies: list[dict[str, Any]], resets: int) -> dict[str, float]:
    kinds: Counter[str] = Counter()
    for tally in tallies:
        kinds.update(tally["requests"])
    return {kind: round(count / resets, 2) for kind, count in sorted(kinds.items())}


def measure(config: Config, out: Path) -> dict[str, Any]:
    """Run every phase and write ``out``; return what was written."""
    document = asyncio.run(run(config))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"bench: wrote {out}", file=sys.stderr)
    return document


async def run(config: Config) -> dict[str, Any]:
    results = Results(config=asdict(config))
    results.machine = machine()
    farm = StubFarm(1 + config.scale_servers, config.sources_per_server, config.scale_delay_ms)
    try:
        with ControlPlane(audit=True) as plane:
            results.machine["kube_apiserver"] = plane.version()["gitVersion"]
            await phases(config, plane, farm, results)
    finally:
        farm.stop()
    return results.document()


async def phases(config: Config, plane: ControlPlane, farm: StubFarm, results: Results) -> None:
    kubectl = plane.kubectl
    kubectl("apply", "--server-side", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD.stem}")
    kubectl("create", "namespace", "idmsync-system")
    kubectl("apply", "-k", str(ROOT / "manifests" / "rbac"))
    kubeconfig = plane.service_account_kubeconfig(
        "idmsync-system", "idmsync-operator", create=False
    )
    api = Api(plane)
    latency_ns, scale_ns = "bench-latency", "bench-scale"
    api.namespace(latency_ns, {"idm": farm.ports[0]})
    scale_ports = farm.ports[1:]
    api.namespace(scale_ns, {f"idm-{i}": port for i, port in enumerate(scale_ports)})
    figures = results.figures
    source = farm.sources[0]
    await api.create_reset(latency_ns, "startup", reset_spec(source))

    log = Path(tempfile.mkdtemp(prefix="idmsync-bench-")) / "operator.log"
    operator = OperatorProcess(
        kubeconfig,
        log,
        namespaces="",
        verbose=False,
        settings={
            "IDMSYNC_MAX_REQUESTS_PER_SERVER": str(MAX_REQUESTS_PER_SERVER),
            **config.operator_env,
        },
    )
    engine = EngineRunner(
        f"http://127.0.0.1:{farm.ports[0]}",
        flavour=Flavour.IDM7,
        user=ADMIN_USER,
        password=ADMIN_PASSWORD,
    )
    try:
        async with Watcher(api) as watcher:
            with results.phase("startup"):
                spawned = time.monotonic()
                operator.start(wait=False)
                await watcher.wait([(latency_ns, "startup")], 120)
                figures["startup_to_ready_s"] = round(
                    watcher.ready[latency_ns, "startup"] - spawned, 3
                )
                await settle(plane, 1.0)
                # picked up: the operator's first request about it, as the API server saw it
                picked = first_request_about(plane, latency_ns, "startup")
                assert picked is not None, "the operator never read the resource"
                figures["startup_s"] = round(picked - operator.started_at, 3)
                await asyncio.sleep(3)
                figures["rss_idle_mb"] = round(operator.rss_kib() / 1024, 1)

            with results.phase("latency"):
                farm.command("clear")
                cpu_before = cpu_seconds(operator.pid)
                engine_times, operator_times = await latency_pair(
                    api, watcher, engine, latency_ns, source, config.latency_runs, "lat"
                )
                cpu = cpu_seconds(operator.pid) - cpu_before
                figures.update(latency_figures(engine_times, operator_times))
                figures["latency_runs"] = len(operator_times)
                figures["operator_cpu_ms_per_reset"] = ms(cpu / (config.latency_runs + 1))
                results.raw["engine_s"] = engine_times
                results.raw["operator_s"] = operator_times
                (tally,) = farm.command("stats")[:1]
                # both the engine's resets and the operator's reached this server
                resets = 2 * (config.latency_runs + 1)
                figures["idm_requests_per_reset"] = requests_per_reset([tally], resets)

            with results.phase("writes"):
                await settle(plane)
                names = [f"lat-{run:03}" for run in range(1, config.latency_runs + 1)]
                writes = per_reset(audit_by_resource(plane, latency_ns), names)
                figures["status_writes_per_reset"] = writes["status_writes"]["mean"]
                figures["api_writes_per_reset"] = writes["api_writes"]["mean"]
                figures["writes_per_reset"] = writes
                reads = operator_reads(plane, latency_ns)
                figures["api_reads_per_reset"] = {
                    kind: round(count / (config.latency_runs + 2), 2)
                    for kind, count in sorted(reads.items())
                }

            with results.phase("scale"):
                farm.command("clear")
                processes = {
                    "operator": operator.pid,
                    **plane.pids(),
                    "idm stubs": farm.process.pid,
                    "bench (creates, watches)": os.getpid(),
                }
                cpu_before = {name: cpu_seconds(pid) for name, pid in processes.items()}
                with profiling(operator.pid, config.profile):
                    await scale(config, api, watcher, farm, results, operator, scale_ns)
                # what each process spent per reset: where the machine's two cores went
                figures["scale_cpu_ms_per_reset"] = {
                    name: ms((cpu_seconds(pid) - cpu_before[name]) / config.scale_resources)
                    for name, pid in processes.items()
                }
                await settle(plane)
                await asyncio.sleep(2)
                figures["rss_after_1000_mb"] = round(operator.rss_kib() / 1024, 1)
                names = [f"s-{i:04}" for i in range(config.scale_resources)]
                figures["scale_writes_per_reset"] = per_reset(
                    audit_by_resource(plane, scale_ns), names
                )

            if config.openidm:
                with results.phase("openidm"):
                    await openidm(config, api, watcher, results)
    finally:
        await engine.close()
        operator.stop()
        await api.close()
        results.raw["operator_log_tail"] = operator.log()[-4000:].splitlines()


@contextlib.contextmanager
def profiling(pid: int, out: str | None) -> Iterator[None]:
    """py-spy (on PATH) samples the operator, without pausing it, into collapsed stacks."""
    if out is None:
        yield
        return
    argv = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--nonblocking"]
    spy = subprocess.Popen([*argv, "--output", out], stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)


async def scale(
    config: Config,
    api: Api,
    watcher: Watcher,
    farm: StubFarm,
    results: Results,
    operator: OperatorProcess,
    namespace: str,
) -> None:
    servers = config.scale_servers
    keys = [(namespace, f"s-{i:04}") for i in range(config.scale_resources)]
    semaphore = asyncio.Semaphore(16)

    async def create(index: int) -> None:
        service = f"idm-{index % servers}"
        source = farm.sources[(index // servers) % len(farm.sources)]
        async with semaphore:
            await api.create_reset(namespace, keys[index][1], reset_spec(source, service))

    cpu_before = cpu_seconds(operator.pid)
    started = time.monotonic()
    await asyncio.gather(*(create(i) for i in range(len(keys))))
    created = time.monotonic() - started
    await watcher.wait(keys, config.timeout)
    curve = sorted(watcher.ready[key] - started for key in keys)
    figures = results.figures
    figures["throughput_1000_over_50_servers_s"] = round(curve[-1], 2)
    figures["scale_created_in_s"] = round(created, 2)
    figures["scale_resets_per_s"] = round(len(keys) / curve[-1], 1)
    figures["operator_cpu_ms_per_reset_at_scale"] = ms(
        (cpu_seconds(operator.pid) - cpu_before) / len(keys)
    )
    results.raw["scale_ready_s"] = [round(t, 4) for t in curve]
    tallies = farm.command("stats")[1:]
    figures["max_concurrent_requests_per_server"] = max(t["max_in_flight"] for t in tallies)
    figures["max_requests_per_server_cap"] = MAX_REQUESTS_PER_SERVER
    stages = [stage for tally in tallies for stage in tally["stages"].values()]
    figures["per_stage_serialization_held"] = all(
        stage["serialized"] and stage["max_in_flight"] == 1 for stage in stages
    )
    figures["max_concurrent_requests_per_stage"] = max(s["max_in_flight"] for s in stages)
    figures["scale_idm_requests_per_reset"] = requests_per_reset(tallies, len(keys))
    figures["scale_resets_seen_by_servers"] = sum(s["resets"] for s in stages)


async def openidm(config: Config, api: Api, watcher: Watcher, results: Results) -> None:
    from tests.harness import openidm as harness

    namespace = "bench-openidm"
    with harness.running() as real:
        port = int(real.idm_url.rsplit(":", 1)[1])
        api.apply(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "idm-admin", "namespace": namespace},
                "stringData": {"username": real.admin_user, "password": real.admin_password},
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "idm", "namespace": namespace},
                "spec": {"ports": [{"name": "http", "port": port}]},
            },
        )
        async with httpx.AsyncClient(
            base_url=f"{real.idm_url}/openidm", headers=real.admin_headers, timeout=120
        ) as http:
            # liveSync makes the stage the first reset records
            answer = await http.post(real.ldap_source, params={"_action": "liveSync"})
            answer.raise_for_status()
        engine = EngineRunner(
            real.idm_url,
            flavour=Flavour.AUTO,
            user=real.admin_user,
            password=real.admin_password,
        )
        try:
            engine_times, operator_times = await latency_pair(
                api,
                watcher,
                engine,
                namespace,
                real.ldap_source,
                config.openidm_runs,
                "idm",
                api_flavour="Auto",
            )
        finally:
            await engine.close()
        figures = latency_figures(engine_times, operator_times)
        figures["runs"] = len(operator_times)
        figures["version"] = real.openidm_version
        results.figures["openidm"] = figures
        results.raw["openidm_engine_s"] = engine_times
        results.raw["openidm_operator_s"] = operator_times


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        line.split()[1]
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(int(memory) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "run_id": secrets.token_hex(4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes (what make test runs)")
    parser.add_argument("--no-openidm", action="store_true", help="skip the real OpenIDM phase")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--latency-runs", type=int)
    parser.add_argument("--resources", type=int)
    parser.add_argument("--servers", type=int)
    parser.add_argument("--profile", help="py-spy the scale phase into this file (raw stacks)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="IDMSYNC_X=VALUE", help="operator setting"
    )
    args = parser.parse_args()
    config = SMOKE if args.smoke else Config()
    changes: dict[str, Any] = {}
    if args.no_openidm:
        changes["openidm"] = False
    if args.latency_runs:
        changes["latency_runs"] = args.latency_runs
    if args.resources:
        changes["scale_resources"] = args.resources
    if args.servers:
        changes["scale_servers"] = args.servers
    if args.profile:
        changes["profile"] = args.profile
    if args.set:
        changes["operator_env"] = dict(item.split("=", 1) for item in args.set)
    config = Config(**{**asdict(config), **changes})
    document = measure(config, args.out)
    keys = [key for key, value in document.items() if not isinstance(value, dict | list)]
    for key in keys:
        print(f"{key:>40} {document[key]}")


if __name__ == "__main__":
    main()
