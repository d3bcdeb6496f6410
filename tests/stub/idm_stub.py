"""A protocol-faithful IDM stub, for fault injection in tests. Not shipped.

It answers the endpoints idmsync uses the way OpenIDM does (see
docs/notes/openidm-rest-facts.md; the contract suite runs the same tests
against it and against a real OpenIDM so it cannot drift): integer revisions as
strings, 409 on a DELETE without If-Match, 412 on a stale rev, 404 when
missing, liveSync creating a missing stage at the source's latest token without
replaying anything, and replaying changes from an older token.

It runs in its own thread with its own event loop, so synchronous tests, the
CLI in a subprocess and async tests can all use it. Every request is logged.

Fault knobs: fail the next N matching requests with a status, delay them
(before or after carrying them out), drop the connection before or after
carrying them out (a lost answer), answer malformed JSON, or bump a stage's rev
just before the next DELETE/PUT (a liveSync sneaking in between read and
delete). ``then=`` runs something just after a request was carried out and
before its (lost) answer, e.g. the scheduler's liveSync recreating the stage.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.stub.loopback_server import LoopbackServer

STAGES = "/openidm/repo/synchronisation/pooledSyncStage"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Fault:
    kind: str  # status | drop | drop_after | malformed | delay | delay_after | bump_rev
    #          | body (hostile answer bodies: huge, endless, drip) | redirect
    remaining: int
    method: str | None = None
    path_contains: str | None = None
    status: int = 500
    seconds: float = 0.0
    then: Callable[[], None] | None = None  # run after carrying the request out
    body: str = ""  # huge | endless | drip
    location: str = ""

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path_contains is None or self.path_contains in path
        )


@dataclass
class Source:
    """A connector object type whose changelog liveSync reads."""

    name: str
    latest: int = 100
    native_type: str = "integer"
    applied: list[int] = field(default_factory=list)  # change numbers liveSync processed
    livesync_error: str | None = None
    #: the oldest change the changelog still holds (older ones were purged)
    first: int = 1


class IdmStub:
    def __init__(
        self,
        *,
        version: str = "7.0.2",
        username: str = "openidm-admin",
        password: str = "openidm-admin",
        bearer_tokens: tuple[str, ...] = (),
    ) -> None:
        self.version = version
        self.username = username
        self.password = password
        self.bearer_tokens = set(bearer_tokens)
        self.stages: dict[str, dict[str, Any]] = {}
        self.sources: dict[str, Source] = {}
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.scheduler_paused = False
        self.scheduler_calls: list[str] = []
        #: scheduled jobs by id (``add_livesync_job``), each with ``paused`` as IDM 7 keeps it
        self.jobs: dict[str, dict[str, Any]] = {}
        #: liveSync sources reported running, with how many more polls they stay so
        self.running: dict[str, int] = {}
        #: sync mappings recon can run: name -> (source, polls until done, final state)
        self.mappings: dict[str, tuple[str, int, str]] = {}
        self.recons: dict[str, dict[str, Any]] = {}
        self.reconciled: list[str] = []  # mappings whose recon ran to SUCCESS
        self.lock = threading.RLock()
        self._server = LoopbackServer(self._make_app, "idm-stub")
        self.port = 0

    # --- lifecycle -----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> IdmStub:
        self.port = self._server.start(port).port
        return self

    def stop(self) -> None:
        self._server.stop()

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    def __enter__(self) -> IdmStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- state helpers for tests ---------------------------------------------------

    def add_source(self, source: str, *, latest: int = 100, native_type: str = "integer") -> None:
        with self.lock:
            self.sources[source] = Source(source, latest=latest, native_type=native_type)

    def add_changes(self, source: str, count: int = 1) -> None:
        with self.lock:
            self.sources[source].latest += count

    def put_stage(self, stage_id: str, token: Any, *, native_type: str = "integer") -> None:
        with self.lock:
            rev = int(self.stages[stage_id]["_rev"]) + 1 if stage_id in self.stages else 1
            self.stages[stage_id] = {
                "_id": stage_id,
                "_rev": str(rev),
                "connectorData": {"nativeType": native_type, "syncToken": token},
            }

    def stage(self, stage_id: str) -> dict[str, Any] | None:
        with self.lock:
            found = self.stages.get(stage_id)
            return json.loads(json.dumps(found)) if found else None

    def fail_next(
        self, count: int, status: int, *, method: str | None = None, path: str | None = None
    ) -> None:
        self._fault(Fault("status", count, method, path, status=status))

    def drop_next(self, count: int, *, method: str | None = None, path: str | None = None) -> None:
        """Cut the connection before carrying the next matching requests out."""
        self._fault(Fault("drop", count, method, path))

    def drop_after_next(
        self,
        count: int,
        *,
        method: str | None = None,
        path: str | None = None,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Carry the next matching requests out, then cut the connection: the answer is lost."""
        self._fault(Fault("drop_after", count, method, path, then=then))

    def malformed_next(
        self, count: int, *, method: str | None = None, path: str | None = None
    ) -> None:
        self._fault(Fault("malformed", count, method, path))

    def delay_next(
        self, count: int, seconds: float, *, method: str | None = None, path: str | None = None
    ) -> None:
        self._fault(Fault("delay", count, method, path, seconds=seconds))

    def delay_after_next(
        self,
        count: int,
        seconds: float,
        *,
        method: str | None = None,
        path: str | None = None,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Carry out the next matching requests, then wait before answering (a kill window)."""
        self._fault(Fault("delay_after", count, method, path, seconds=seconds, then=then))

    def hostile_body_next(
        self, count: int, body: str, *, method: str | None = None, path: str | None = None
    ) -> None:
        """Answer 200 with a ``huge`` (64 MiB), ``endless`` or ``drip`` (a byte each 50 ms,
        forever) body; the answering stops when the client hangs up."""
        assert body in ("huge", "endless", "drip"), body
        self._fault(Fault("body", count, method, path, body=body))

    def redirect_next(
        self, count: int, location: str, *, method: str | None = None, path: str | None = None
    ) -> None:
        self._fault(Fault("redirect", count, method, path, location=location))

    def bump_rev_before_next(self, count: int = 1, *, method: str = "DELETE") -> None:
        """Just before the next ``count`` DELETE/PUT of a stage, a liveSync bumps its rev."""
        self._fault(Fault("bump_rev", count, method, STAGES + "/"))

    def _fault(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    def requests_to(self, path_contains: str, method: str | None = None) -> list[RecordedRequest]:
        with self.lock:
            return [
                r
                for r in self.requests
                if path_contains in r.path and (method is None or r.method == method)
            ]

    def steps(self) -> list[str]:
        """The request log as "METHOD path-under-/openidm", for comparing sequences."""
        with self.lock:
            return [f"{r.method} {r.path.removeprefix('/openidm/')}" for r in self.requests]

    def clear_log(self) -> None:
        with self.lock:
            self.requests.clear()

    # --- HTTP ----------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        with self.lock:
            self.requests.append(
                RecordedRequest(
                    request.method,
                    request.path,
                    dict(request.query),
                    {k.lower(): v for k, v in request.headers.items()},
                    body,
                )
            )
            fault = next(
                (
                    f
                    for f in self.faults
                    if f.remaining > 0 and f.matches(request.method, request.path)
                ),
                None,
            )
            if fault is not None:
                fault.remaining -= 1
        if fault is not None:
            if fault.kind == "delay":
                await asyncio.sleep(fault.seconds)
            elif fault.kind == "status":
                return _error(fault.status, "injected fault")
            elif fault.kind == "redirect":
                raise web.HTTPFound(location=fault.location)
            elif fault.kind == "body":
                return await hostile_body(request, fault.body)
            elif fault.kind == "malformed":
                return web.Response(
                    status=200, text='{"_id": "trunc', content_type="application/json"
                )
            elif fault.kind == "drop":
                assert request.transport is not None
                request.transport.abort()
                return web.Response(status=500)
            elif fault.kind == "bump_rev":
                stage_id = request.path.rsplit("/", 1)[-1]
                with self.lock:
                    if stage_id in self.stages:
                        stage = self.stages[stage_id]
                        stage["_rev"] = str(int(stage["_rev"]) + 1)
        if not self._authenticated(request):
            return _error(401, "Access Denied")
        response: web.StreamResponse = await handler(request)
        if "X-OpenIDM-Username" in request.headers:
            # as OpenIDM does after a header login (idmsync must not send it back)
            response.set_cookie("session-jwt", "stub-session", httponly=True)
        if fault is not None and fault.then is not None:
            with self.lock:
                fault.then()
        if fault is not None and fault.kind == "drop_after":
            assert request.transport is not None
            request.transport.abort()
        if fault is not None and fault.kind == "delay_after":
            await asyncio.sleep(fault.seconds)
        return response

    def _authenticated(self, request: web.Request) -> bool:
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            return authorization[len("Bearer ") :] in self.bearer_tokens
        return (
            request.headers.get("X-OpenIDM-Username") == self.username
            and request.headers.get("X-OpenIDM-Password") == self.password
        )

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path, method = request.path, request.method
        if path == "/openidm/info/version" and method == "GET":
            return web.json_response({"_id": "version", "productVersion": self.version})
        if path == "/openidm/info/ping" and method == "GET":
            return web.json_response({"_id": "", "state": "ACTIVE_READY"})
        if path == STAGES and method == "GET":
            return self._query_stages(request)
        if path.startswith(STAGES + "/"):
            return await self._stage(request, path[len(STAGES) + 1 :])
        if path.startswith("/openidm/system/") and method == "POST":
            return self._system_action(request, path[len("/openidm/") :])
        if path == "/openidm/scheduler/job" and method == "POST":
            return self._scheduler(request)
        if path == "/openidm/scheduler/job" and method == "GET":
            return self._query_jobs()
        if path.startswith("/openidm/scheduler/job/") and method == "POST":
            return self._job_action(request, path.rsplit("/", 1)[-1])
        if path == "/openidm/recon" and method == "POST":
            return self._start_recon(request)
        if path == "/openidm/recon" and method == "GET":
            with self.lock:
                runs = [dict(run) for run in self.recons.values()]
            return web.json_response({"_id": "", "reconciliations": runs})
        if path.startswith("/openidm/recon/") and method == "GET":
            return self._read_recon(path.rsplit("/", 1)[-1])
        return _error(404, f"Resource '{path}' not found")

    def _query_stages(self, request: web.Request) -> web.Response:
        query = request.query
        if query.get("_queryFilter") != "true" and query.get("_queryId") != "query-all-ids":
            return _error(400, "Query request must specify _queryFilter or _queryId")
        with self.lock:
            if query.get("_queryId") == "query-all-ids" or query.get("_fields") == "_id":
                # OpenIDM 6.1 adds _rev to the rows of both id queries
                result = [{"_id": s["_id"], "_rev": s["_rev"]} for s in self.stages.values()]
            else:
                result = [json.loads(json.dumps(s)) for s in self.stages.values()]
        return web.json_response(
            {
                "result": result,
                "resultCount": len(result),
                "pagedResultsCookie": None,
                "totalPagedResultsPolicy": "NONE",
                "totalPagedResults": -1,
                "remainingPagedResults": -1,
            }
        )

    async def _stage(self, request: web.Request, stage_id: str) -> web.Response:
        body = await request.json() if request.method == "PUT" else None
        with self.lock:
            stage = self.stages.get(stage_id)
            if request.method == "GET":
                if stage is None:
                    return _error(404, f"Object {stage_id} not found in {_COLLECTION}")
                return _stage_response(stage)
            if request.method == "DELETE":
                # OpenIDM checks If-Match before existence, and only takes an int revision
                rev = _if_match(request)
                if rev is None:
                    return _error(
                        409, "Object passed into delete does not have revision it expects set."
                    )
                if isinstance(rev, _Unparsable):
                    return _error(
                        409,
                        "OrientDB repository expects revisions as int, unable "
                        f"to parse passed revision: {rev.text}",
                    )
                if stage is None:
                    return _error(
                        404, f"Object does not exist for delete on: {_COLLECTION}/{stage_id}"
                    )
                if rev != stage["_rev"]:
                    return _error(
                        412,
                        "Delete rejected as current Object revision is "
                        "different than expected by caller, the object has changed "
                        "since retrieval.",
                    )
                del self.stages[stage_id]
                return _stage_response(stage)
            if request.method == "PUT":
                if stage is None:
                    if request.headers.get("If-None-Match") != "*":
                        return _error(404, f"Object {stage_id} not found in {_COLLECTION}")
                    created = {**body, "_id": stage_id, "_rev": "1"}
                    self.stages[stage_id] = created
                    return _stage_response(created, status=201)
                rev = _if_match(request)
                if isinstance(rev, _Unparsable):
                    return _error(
                        409,
                        "OrientDB repository expects revisions as int, unable "
                        f"to parse passed revision: {rev.text}",
                    )
                if rev is not None and rev != stage["_rev"]:
                    return _error(
                        412,
                        "Update rejected as current Object revision is "
                        "different than expected by caller, the object has changed "
                        "since retrieval",
                    )
                updated = {**body, "_id": stage_id, "_rev": str(int(stage["_rev"]) + 1)}
                self.stages[stage_id] = updated
                return _stage_response(updated)
        return _error(405, f"{request.method} not supported")

    def _system_action(self, request: web.Request, source: str) -> web.Response:
        if request.query.get("_action") != "liveSync":
            return _error(400, "Unsupported action")
        with self.lock:
            if source not in self.sources:
                return _error(404, f"Resource '{source}' not found")
            if self.sources[source].livesync_error:
                # OpenIDM answers a connector failure with a 500 error body
                return _error(500, str(self.sources[source].livesync_error))
            return web.json_response(self.livesync(source))

    def livesync(self, source: str) -> dict[str, Any]:
        """One liveSync run on ``source``, as IDM's scheduler or a trigger runs it."""
        with self.lock:
            state = self.sources[source]
            stage_id = source.replace("/", "").upper()
            stage = self.stages.get(stage_id)
            data = {"nativeType": state.native_type, "syncToken": state.latest}
            if stage is None:
                # no stage: start at the latest token, replay nothing; answer only the data
                self.stages[stage_id] = {"_id": stage_id, "_rev": "1", "connectorData": data}
                return {"connectorData": data}
            token = stage["connectorData"]["syncToken"]
            start = int(token) if token is not None else state.latest
            # changes purged from the changelog are never seen (a Trimmed token misses them)
            state.applied.extend(range(max(start + 1, state.first), state.latest + 1))
            # every run writes the stage, changes or not; the answer shows the rev it read
            read_rev = stage["_rev"]
            self.stages[stage_id] = {
                **stage,
                "_rev": str(int(read_rev) + 1),
                "connectorData": {**data, "syncToken": max(start, state.latest)},
            }
            return {
                "connectorData": self.stages[stage_id]["connectorData"],
                "_id": stage_id,
                "_rev": read_rev,
            }

    # --- scheduler jobs and reconciliation (as OpenIDM 6.1 answers; per-job pause from 7) ---

    def add_livesync_job(self, job_id: str, source: str) -> None:
        with self.lock:
            self.jobs[job_id] = {
                "_id": job_id,
                "enabled": True,
                "persisted": True,
                "type": "cron",
                "schedule": "0/15 * * * * ?",
                "invokeService": "org.forgerock.openidm.provisioner",
                "invokeContext": {"action": "liveSync", "source": source},
                "concurrentExecution": False,
                "paused": False,
            }

    def livesync_running(self, source: str, polls: int) -> None:
        """Report a liveSync of ``source`` as running for the next ``polls`` asks."""
        with self.lock:
            self.running[source] = polls

    def add_mapping(
        self, name: str, source: str, *, polls: int = 2, state: str = "SUCCESS"
    ) -> None:
        """A mapping whose recon stays ACTIVE for ``polls`` reads, then ends ``state``."""
        with self.lock:
            self.mappings[name] = (source, polls, state)

    @property
    def _per_job_pause(self) -> bool:
        return int(self.version.split(".")[0]) >= 7

    def _query_jobs(self) -> web.Response:
        with self.lock:
            rows = [{k: v for k, v in job.items() if k != "paused"} for job in self.jobs.values()]
        return web.json_response(
            {
                "result": rows,
                "resultCount": len(rows),
                "pagedResultsCookie": None,
                "totalPagedResultsPolicy": "EXACT",
                "totalPagedResults": len(rows),
                "remainingPagedResults": -1,
            }
        )

    def _job_action(self, request: web.Request, job_id: str) -> web.Response:
        action = request.query.get("_action")
        if not self._per_job_pause or action not in ("pause", "resume"):
            # OpenIDM 6.1 knows only the collection actions, and says so with a 500
            return _error(
                500,
                "Expecting String containing one of: create listCurrentlyExecutingJobs "
                "pauseJobs resumeJobs",
            )
        with self.lock:
            if job_id not in self.jobs:
                return _error(404, f"Job {job_id} not found")
            self.scheduler_calls.append(f"{action}:{job_id}")
            self.jobs[job_id]["paused"] = action == "pause"
        return web.json_response({"success": True})

    def _running_jobs(self) -> web.Response:
        rows = []
        with self.lock:
            for source, polls in list(self.running.items()):
                if polls <= 0:
                    del self.running[source]
                    continue
                self.running[source] = polls - 1
                # as OpenIDM 6.1 lists them: the job's fields, but no _id
                rows.append(
                    {
                        "enabled": True,
                        "persisted": True,
                        "type": "cron",
                        "invokeService": "org.forgerock.openidm.provisioner",
                        "invokeContext": {"action": "liveSync", "source": source},
                        "concurrentExecution": False,
                    }
                )
        return web.json_response(rows)

    def _start_recon(self, request: web.Request) -> web.Response:
        if request.query.get("_action") != "recon":
            return _error(400, "Unsupported action")
        mapping = request.query.get("mapping")
        if not mapping:
            return _error(400, "/mapping: Expecting a value")
        with self.lock:
            if mapping not in self.mappings:
                return _error(409, f"No such mapping: {mapping}")
            recon_id = f"stub-recon-{len(self.recons) + 1}"
            source, polls, final = self.mappings[mapping]
            self.recons[recon_id] = {
                "_id": recon_id,
                "mapping": mapping,
                "state": "ACTIVE",
                "stage": "ACTIVE_INITIALIZED",
                "stageDescription": "initialized",
                "progress": {
                    "source": {"existing": {"processed": 0, "total": "?"}},
                    "target": {"existing": {"processed": 0, "total": "?"}, "created": 0},
                    "links": {"existing": {"processed": 0, "total": "?"}, "created": 0},
                },
                "situationSummary": {"CONFIRMED": 0, "ABSENT": 0, "MISSING": 0},
                "statusSummary": {"SUCCESS": 0, "FAILURE": 0},
                "parameters": {"sourceQuery": {"resourceName": source, "queryId": "query-all-ids"}},
                "started": "2026-11-29T04:31:20.357Z",
                "ended": "",
                "_polls": polls,
                "_final": final,
            }
        return web.json_response({"_id": recon_id, "state": "ACTIVE"})

    def _read_recon(self, recon_id: str) -> web.Response:
        with self.lock:
            run = self.recons.get(recon_id)
            if run is None:
                return _error(404, f"Reconciliation with id {recon_id} not found.")
            if run["state"] == "ACTIVE":
                if run["_polls"] > 0:
                    run["_polls"] -= 1
                    run["stage"] = "ACTIVE_RECONCILING_SOURCE"
                else:
                    final = run["_final"]
                    run["state"] = final
                    run["stage"] = f"COMPLETED_{final}"
                    run["ended"] = "2026-11-29T04:31:21.645Z"
                    if final == "SUCCESS":
                        run["progress"]["source"]["existing"] = {"processed": 3, "total": "3"}
                        run["progress"]["target"]["created"] = 1
                        run["situationSummary"].update(CONFIRMED=2, ABSENT=1)
                        run["statusSummary"] = {"SUCCESS": 3, "FAILURE": 0}
                        self.reconciled.append(run["mapping"])
            answer = {k: v for k, v in run.items() if not k.startswith("_") or k == "_id"}
        return web.json_response(answer)

    def _scheduler(self, request: web.Request) -> web.Response:
        action = request.query.get("_action")
        if action == "listCurrentlyExecutingJobs":
            return self._running_jobs()
        with self.lock:
            self.scheduler_calls.append(str(action))
            if action == "pauseJobs":
                self.scheduler_paused = True
            elif action == "resumeJobs":
                self.scheduler_paused = False
            else:
                return _error(400, "Unsupported action")
        return web.json_response({"success": True})


_COLLECTION = "synchronisation/pooledSyncStage"


@dataclass(frozen=True)
class _Unparsable:
    text: str


def _if_match(request: web.Request) -> str | _Unparsable | None:
    """The revision in If-Match, bare or quoted; OrientDB wants an int."""
    header = request.headers.get("If-Match")
    if header is None:
        return None
    text = header.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return text if text.isdigit() else _Unparsable(text)


async def hostile_body(request: web.Request, kind: str) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    chunk = b"[" + b"0," * 32767
    if kind == "huge":
        response.content_length = 64 * 1024 * 1024
    await response.prepare(request)
    sent = 0
    try:
        while kind != "huge" or sent + len(chunk) <= 64 * 1024 * 1024:
            if kind == "drip":
                await response.write(b" ")
                await asyncio.sleep(0.05)
            else:
                await response.write(chunk)
                sent += len(chunk)
    except (ConnectionError, RuntimeError):
        pass  # the client hung up, as it should
    return response


def _stage_response(stage: dict[str, Any], status: int = 200) -> web.Response:
    response = web.json_response(stage, status=status)
    if "_rev" in stage:
        response.headers["ETag"] = f'"{stage["_rev"]}"'
    response.headers["Cache-Control"] = "no-cache"
    return response


def _error(status: int, message: str) -> web.Response:
    reasons = {
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        405: "Method Not Allowed",
        409: "Conflict",
        412: "Precondition Failed",
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Unavailable",
    }
    escaped = html.escape(message, quote=True).replace("&#x27;", "&#39;")
    return web.json_response(
        {"code": status, "reason": reasons.get(status, "Error"), "message": escaped},
        status=status,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the idmsync IDM stub (tests and demo)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--version", default="7.0.2")
    parser.add_argument("--source", action="append", default=["system/ldap/account"])
    parser.add_argument("--token", type=int, default=100, help="initial stage token")
    args = parser.parse_args()
    stub = IdmStub(version=args.version).start(args.port)
    for source in args.source:
        stub.add_source(source, latest=args.token + 5)
        stub.put_stage(source.replace("/", "").upper(), args.token)
    print(f"IDM_URL={stub.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        stub.stop()


if __name__ == "__main__":
    main()
