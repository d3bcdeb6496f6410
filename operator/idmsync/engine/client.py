"""The IDM REST client: one server, one flavour, one credential strategy.

Maps HTTP outcomes onto the error hierarchy in :mod:`idmsync.errors`; never
follows a redirect; authenticates with the credentials' httpx auth (an OAuth flow
refreshes its token once on a 401). It sends a request
again (capped backoff) only when that cannot change anything twice: a read, an
idempotent action (pause/resume the scheduler), or a request that provably
never left (the connection was not made). A change (DELETE, PUT, liveSync)
that failed after it may have reached the server is raised with
``outcome_unknown``: the workflow re-reads the stage and decides.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from idmsync.auth import Credentials
from idmsync.bounded import AnswerTooLarge, send_bounded
from idmsync.engine.flavour import Flavour, flavour_for_version
from idmsync.engine.keyed import KeyedLocks
from idmsync.engine.model import ServerInfo, Stage
from idmsync.engine.naming import (
    normalise_server_url,
    validate_context_path,
    validate_mapping,
    validate_source,
    validate_stage_id,
)
from idmsync.engine.retry import RetryPolicy
from idmsync.errors import (
    Forbidden,
    IdmSyncError,
    LiveSyncFailed,
    NotFound,
    ProtocolError,
    RevisionConflict,
    ServerError,
    ServerFailure,
    ServerUnreachable,
    TransportFailure,
    Unauthorized,
    clip,
    redirect_refused,
)

__all__ = ["MAX_SERVERS", "STAGE_COLLECTION", "IdmClient", "ServerVersions"]

log = logging.getLogger(__name__)

STAGE_COLLECTION = "repo/synchronisation/pooledSyncStage"

#: failures that prove the request never reached the server: safe to send again
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

_TLS_HINT = (
    "; the server's certificate is not trusted for this host name: give the CA that issued "
    "it (tls.caSecretRef, or --ca-file), or use the name the certificate is for"
)

#: the largest answer read (after decompression): stage answers are a few hundred bytes
MAX_ANSWER_BYTES = 4 * 1024 * 1024
#: the longest one request may take, answer included: a slow drip cannot hold a reset
ANSWER_DEADLINE = 120.0

#: how many servers' versions a :class:`ServerVersions` remembers
MAX_SERVERS = 256


class ServerVersions:
    """What info/version said, per server: Auto reads it once, concurrent resets share it.

    Owned by whoever makes the clients (the operator's context, one CLI run); a client
    made without one has its own. Remembers at most ``max_servers``, the least recently
    used forgotten first (read again when next needed); a server's read lock lives only
    while a client reads or waits.
    """

    def __init__(self, max_servers: int = MAX_SERVERS) -> None:
        self._max_servers = max_servers
        self._known: OrderedDict[str, tuple[Flavour, str | None]] = OrderedDict()
        self._reading: KeyedLocks[str] = KeyedLocks()

    def __len__(self) -> int:
        return len(self._known)

    def get(self, url: str) -> tuple[Flavour, str | None] | None:
        known = self._known.get(url)
        if known is not None:
            self._known.move_to_end(url)
        return known

    async def read_once(
        self, url: str, read: Callable[[], Awaitable[tuple[Flavour, str | None]]]
    ) -> tuple[Flavour, str | None]:
        """The remembered answer, or ``read()`` by one caller at a time until one succeeds."""
        known = self.get(url)
        if known is not None:
            return known
        async with self._reading.hold(url):
            known = self.get(url)
            if known is None:
                known = await read()
                self._known[url] = known
                while len(self._known) > self._max_servers:
                    self._known.popitem(last=False)
            return known


class IdmClient:
    """One IDM server's REST API, as a reset needs it: read, delete and set stages, trigger
    liveSync, follow a reconciliation. Each request goes with that server's credentials and
    dialect; a redirect is never followed, and only requests safe to repeat are repeated."""

    def __init__(
        self,
        server_url: str,
        credentials: Credentials,
        http: httpx.AsyncClient,
        *,
        flavour: Flavour = Flavour.AUTO,
        context_path: str = "/openidm",
        retry: RetryPolicy | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        answer_deadline: float = ANSWER_DEADLINE,
        versions: ServerVersions | None = None,
    ) -> None:
        self.server_url = normalise_server_url(server_url)
        self.base_url = self.server_url + validate_context_path(context_path)
        self.credentials = credentials
        self.http = http
        self._auth = credentials.auth(http)
        self.versions = versions if versions is not None else ServerVersions()
        self.requested_flavour = flavour
        self.retry = retry or RetryPolicy()
        self.max_answer_bytes = max_answer_bytes
        self.answer_deadline = answer_deadline
        self._flavour: Flavour | None = None if flavour is Flavour.AUTO else flavour
        self._version: str | None = None

    # --- server --------------------------------------------------------------------

    async def server_info(self) -> ServerInfo:
        """The flavour to speak (resolving Auto once per server) and the version if read."""
        if self._flavour is None:
            self._flavour, self._version = await self._detect_flavour()
        elif self._version is None and (known := self.versions.get(self.base_url)) is not None:
            self._version = known[1]
        return ServerInfo(url=self.base_url, flavour=self._flavour, version=self._version)

    async def _detect_flavour(self) -> tuple[Flavour, str | None]:
        return await self.versions.read_once(self.base_url, self._read_version)

    async def _read_version(self) -> tuple[Flavour, str | None]:
        # the dialect is what we are finding out: ask plainly, unless already known
        body = await self._call("GET", "info/version", flavour=self._flavour or Flavour.LEGACY)
        version = body.get("productVersion") if isinstance(body, dict) else None
        if not isinstance(version, str):
            raise ProtocolError(
                f"GET {self.base_url}/info/version: no productVersion in the answer; "
                "set api explicitly (IDM7, Legacy or IdentityCloud)"
            )
        return flavour_for_version(version), version

    async def version(self) -> str | None:
        """The server's productVersion (read once per server), or None if it will not say."""
        if self._version is None:
            try:
                _, self._version = await self._detect_flavour()
            except IdmSyncError as exc:  # informational only: never fail a reset over it
                log.info("no version from %s: %s", self.base_url, exc.message)
                return None
        return self._version

    # --- stages --------------------------------------------------------------------

    async def list_stage_ids(self) -> list[str]:
        flavour = (await self.server_info()).flavour
        body = await self._call("GET", STAGE_COLLECTION, params=flavour.list_query)
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, list):
            raise ProtocolError(f"listing {STAGE_COLLECTION}: the answer has no 'result' list")
        ids: list[str] = []
        for item in result:
            stage_id = item.get("_id") if isinstance(item, dict) else None
            if not isinstance(stage_id, str):
                raise ProtocolError(f"listing {STAGE_COLLECTION}: an entry has no string '_id'")
            ids.append(stage_id)
        return ids

    async def read_stage(self, stage_id: str) -> Stage | None:
        """The stage, or None when it does not exist (404)."""
        try:
            body = await self._call("GET", f"{STAGE_COLLECTION}/{validate_stage_id(stage_id)}")
        except NotFound:
            return None
        return _parse_stage(stage_id, body)

    async def delete_stage(self, stage_id: str, rev: str) -> None:
        """DELETE with ``If-Match: rev``. Raises NotFound (404) or RevisionConflict (412)."""
        await self._call(
            "DELETE",
            f"{STAGE_COLLECTION}/{validate_stage_id(stage_id)}",
            headers={"If-Match": rev},
            idempotent=False,
            # a 2xx is the whole answer: the body (the deleted stage) is not needed, and a
            # garbled one must not turn a delete that happened into a failure
            answer_body=False,
        )

    async def write_stage_token(self, stage: Stage, token: Any) -> Stage:
        """Replace the stage's sync token (action Set), guarded by ``If-Match``."""
        body = dict(stage.body)
        body.pop("_rev", None)
        connector_data = dict(body.get("connectorData") or {})
        connector_data["syncToken"] = token
        body["connectorData"] = connector_data
        answer = await self._call(
            "PUT",
            f"{STAGE_COLLECTION}/{validate_stage_id(stage.id)}",
            headers={"If-Match": stage.rev},
            json_body=body,
            idempotent=False,
        )
        return _parse_stage(stage.id, answer)

    # --- liveSync and the scheduler ------------------------------------------------

    async def trigger_livesync(self, source: str) -> dict[str, Any]:
        """``POST system/<connector>/<type>?_action=liveSync``; returns the stage IDM reports."""
        try:
            body = await self._call(
                "POST", validate_source(source), params={"_action": "liveSync"}, idempotent=False
            )
        except ServerError as exc:  # OpenIDM answers a connector failure with a 500
            raise LiveSyncFailed(
                f"liveSync on {source} failed: {exc.message}",
                status=exc.status,
                outcome_unknown=exc.outcome_unknown,
            ) from None
        if not isinstance(body, dict):
            raise ProtocolError(f"liveSync on {source}: expected a JSON object")
        failure = body.get("lastException")
        if failure:
            text = failure.get("throwable") if isinstance(failure, dict) else failure
            raise LiveSyncFailed(
                f"liveSync on {source} reported an exception: {self._clip(str(text))}"
            )
        return body

    async def pause_scheduler(self) -> None:
        await self._call("POST", "scheduler/job", params={"_action": "pauseJobs"}, idempotent=True)

    async def resume_scheduler(self) -> None:
        await self._call("POST", "scheduler/job", params={"_action": "resumeJobs"}, idempotent=True)

    async def list_jobs(self) -> list[dict[str, Any]]:
        """Every scheduled job (``GET scheduler/job?_queryFilter=true``)."""
        body = await self._call("GET", "scheduler/job", params={"_queryFilter": "true"})
        return _rows(body, "result", "scheduler/job")

    async def running_jobs(self) -> list[dict[str, Any]]:
        """Jobs running now on the node that answers (OpenIDM 6.1: without ``_id``)."""
        body = await self._call(
            "POST",
            "scheduler/job",
            params={"_action": "listCurrentlyExecutingJobs"},
            idempotent=True,
        )
        if not isinstance(body, list):
            raise ProtocolError("listCurrentlyExecutingJobs: expected a JSON array")
        return [job for job in body if isinstance(job, dict)]

    async def pause_job(self, job_id: str) -> None:
        """Pause one job (scheduler API 2.0; OpenIDM 6.1 answers 500). Sent once."""
        await self._call("POST", f"scheduler/job/{job_id}", params={"_action": "pause"})

    async def resume_job(self, job_id: str) -> None:
        await self._call(
            "POST", f"scheduler/job/{job_id}", params={"_action": "resume"}, idempotent=True
        )

    # --- reconciliation ------------------------------------------------------------

    async def start_recon(self, mapping: str) -> dict[str, Any]:
        """``POST recon?_action=recon&mapping=M``: starts it, answers ``{_id, state}``."""
        params = {"_action": "recon", "mapping": validate_mapping(mapping)}
        try:
            body = await self._call("POST", "recon", params=params)
        except ProtocolError as exc:
            if exc.status == 409:  # OpenIDM: 409 "No such mapping: <name>"
                raise NotFound(f"reconciliation: {exc.message}", status=409) from None
            raise
        if not isinstance(body, dict) or not isinstance(body.get("_id"), str):
            raise ProtocolError(f"reconciliation of {mapping}: the answer has no '_id'")
        return body

    async def read_recon(self, recon_id: str) -> dict[str, Any] | None:
        """``GET recon/<id>``; None when IDM does not know it (404, e.g. after a restart)."""
        try:
            body = await self._call("GET", f"recon/{recon_id}")
        except NotFound:
            return None
        if not isinstance(body, dict):
            raise ProtocolError(f"recon/{recon_id}: expected a JSON object")
        return body

    async def list_recons(self) -> list[dict[str, Any]]:
        """``GET recon``: the runs this node remembers."""
        return _rows(await self._call("GET", "recon"), "reconciliations", "recon")

    # --- HTTP ----------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
        flavour: Flavour | None = None,
        idempotent: bool | None = None,
        answer_body: bool = True,
    ) -> Any:
        """One request; sent again on a transient failure only if that is safe.

        ``idempotent`` defaults to True for GET and False for anything else.
        """
        if flavour is None:
            flavour = (await self.server_info()).flavour
        if idempotent is None:
            idempotent = method == "GET"
        url = self.base_url + "/" + "/".join(quote(part, safe="") for part in path.split("/"))
        request_headers = dict(headers or {})
        if flavour.sends_api_version:
            request_headers["Accept-API-Version"] = "resource=1.0"
        retry_number = 0
        while True:
            try:
                response = await self._send(
                    method,
                    url,
                    params=params,
                    headers=request_headers,
                    json_body=json_body,
                    answer_body=answer_body,
                )
                return self._decode(method, url, response, answer_body=answer_body)
            except _NOT_SENT as exc:
                error: IdmSyncError = ServerUnreachable(
                    f"{method} {url}: {type(exc).__name__}: {self._clip(str(exc))}"
                    + _TLS_HINT * ("CERTIFICATE_VERIFY_FAILED" in str(exc))
                )
            except httpx.TimeoutException as exc:
                error = ServerUnreachable(
                    f"{method} {url}: timed out ({type(exc).__name__})", outcome_unknown=True
                )
            except TimeoutError:
                error = ServerUnreachable(
                    f"{method} {url}: no complete answer within {self.answer_deadline:g}s",
                    outcome_unknown=True,
                )
            except httpx.TransportError as exc:
                error = ServerUnreachable(
                    f"{method} {url}: {type(exc).__name__}: {self._clip(str(exc))}",
                    outcome_unknown=True,
                )
            except IdmSyncError as exc:
                error = exc
            transient = isinstance(error, TransportFailure | ServerFailure)
            if (
                not transient
                or (error.outcome_unknown and not idempotent)
                or retry_number + 1 >= self.retry.attempts
            ):
                if error.outcome_unknown and not idempotent:
                    error.message += f"; the {method} may have been carried out"
                raise error
            retry_number += 1
            delay = self.retry.delay(retry_number)
            log.info("%s; retry %d in %.2fs", error.message, retry_number, delay)
            await asyncio.sleep(delay)

    async def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str],
        json_body: Any,
        answer_body: bool,
    ) -> httpx.Response:
        """The request, its answer read within the deadline and the size bound."""
        request = self.http.build_request(
            method, url, params=params, headers=headers, json=json_body
        )
        try:
            return await send_bounded(
                self.http,
                request,
                max_bytes=self.max_answer_bytes,
                deadline=self.answer_deadline,
                read_body=answer_body,
                auth=self._auth,
            )
        except AnswerTooLarge as exc:
            raise ProtocolError(
                f"{method} {url}: {exc}; not read further",
                status=exc.status,
                # a change answered 2xx was carried out: the workflow reads back
                outcome_unknown=method != "GET" and 200 <= exc.status < 300,
            ) from None

    def _decode(
        self, method: str, url: str, response: httpx.Response, *, answer_body: bool = True
    ) -> Any:
        status = response.status_code
        what = f"{method} {url}"
        if 200 <= status < 300:
            if not response.content or not answer_body:
                return {}
            try:
                return response.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ProtocolError(
                    f"{what}: {status} with a body that is not JSON: {self._clip(response.text)!r}",
                    status=status,
                ) from None
        detail = self._server_message(response)
        if 300 <= status < 400:
            raise redirect_refused(what, status, response.headers.get("location"))
        error_type: type[IdmSyncError]
        if status == 401:
            error_type = Unauthorized
        elif status == 403:
            error_type = Forbidden
        elif status == 404:
            error_type = NotFound
        elif status == 412:
            error_type = RevisionConflict
        elif status >= 500:
            # the server got the request: whether it acted before failing, only a re-read says
            raise ServerError(
                f"{what}: {status} {detail}".rstrip(), status=status, outcome_unknown=True
            )
        else:
            error_type = ProtocolError
        raise error_type(f"{what}: {status} {detail}".rstrip(), status=status)

    def _server_message(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return self._clip(response.reason_phrase)
        if isinstance(body, dict):
            parts = [str(body.get(k)) for k in ("reason", "message") if body.get(k)]
            if parts:
                return self._clip(": ".join(parts))
        return self._clip(response.reason_phrase)

    def _clip(self, text: str) -> str:
        return clip(text, self.credentials.secret_values())


def _rows(body: Any, key: str, what: str) -> list[dict[str, Any]]:
    rows = body.get(key) if isinstance(body, dict) else None
    if not isinstance(rows, list):
        raise ProtocolError(f"{what}: the answer has no {key!r} list")
    return [row for row in rows if isinstance(row, dict)]


def _parse_stage(stage_id: str, body: Any) -> Stage:
    if not isinstance(body, dict):
        raise ProtocolError(f"stage {stage_id}: expected a JSON object")
    rev = body.get("_rev")
    if not isinstance(rev, str | int) or isinstance(rev, bool):
        raise ProtocolError(f"stage {stage_id}: the answer has no '_rev'")
    connector_data = body.get("connectorData")
    token = connector_data.get("syncToken") if isinstance(connector_data, dict) else None
    return Stage(id=stage_id, rev=str(rev), sync_token=token, body=body)
