"""A fault-injecting HTTP/1.1 proxy, for running the same fault cases against the IDM stub
and against a real OpenIDM (which has no fault knobs of its own).

It sits between idmsync and the server, reads one request per client connection, and per
request applies the first matching rule:

    pass          forward, answer                          (the default)
    status        answer a synthetic error, forward nothing (a gateway's 5xx burst)
    reset         cut the connection, forward nothing       (the request never arrived)
    drop_after    forward, let the server act, cut the connection: the answer is lost
    delay_before  wait, then forward only if the client is still there (else nothing arrives)
    delay_after   forward, wait, then answer (or not: a client that timed out is gone)
    garble        forward, answer the server's status with a truncated JSON body

``before=`` / ``after=`` hooks run just before forwarding and just after the server
answered (e.g. a liveSync sneaking in); with ``status`` and ``reset``, ``before`` runs as
the request arrives, before it is refused (e.g. the client killed while its request is lost).
Every request is logged with whether it reached the server, so tests count the destructive
calls the *server* saw, whatever the backend.

Each request goes upstream on its own connection with ``Connection: close``, and each
answer goes back with ``Connection: close``: no framing to rewrite, one request per
connection, which httpx handles by opening the next.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass

from tests.stub.loopback_server import LoopbackServer

Hook = Callable[[], None]


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    path: str  # without the query
    forwarded: bool  # reached the server
    query: str = ""


@dataclass
class Rule:
    action: str
    remaining: int
    method: str | None = None
    path_contains: str | None = None  # matched against the path and query
    status: int = 503
    seconds: float = 0.0
    before: Hook | None = None
    after: Hook | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path_contains is None or self.path_contains in path
        )


class FaultProxy(LoopbackServer):
    """``tls``: serve HTTPS with this context (the upstream stays plain HTTP); a client that
    refuses the certificate never gets a request through, and nothing is logged for it."""

    def __init__(
        self, upstream_host: str, upstream_port: int, *, tls: ssl.SSLContext | None = None
    ) -> None:
        super().__init__(None, "fault-proxy", tls=tls)
        self.upstream = (upstream_host, upstream_port)
        self.rules: list[Rule] = []
        self.log: list[ProxiedRequest] = []
        self.lock = threading.Lock()
        self._server: asyncio.Server | None = None

    # --- rules and the log -----------------------------------------------------------

    def add(
        self,
        action: str,
        count: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        status: int = 503,
        seconds: float = 0.0,
        before: Hook | None = None,
        after: Hook | None = None,
    ) -> FaultProxy:
        assert action in {
            "pass",
            "status",
            "reset",
            "drop_after",
            "delay_before",
            "delay_after",
            "garble",
        }, action
        with self.lock:
            self.rules.append(Rule(action, count, method, path, status, seconds, before, after))
        return self

    def reached(self, method: str, path_contains: str = "") -> int:
        """How many such requests reached the server."""
        with self.lock:
            return sum(
                1
                for r in self.log
                if r.forwarded and r.method == method and path_contains in r.path
            )

    def sent(self, method: str, path_contains: str = "") -> int:
        """How many such requests the client sent (reaching the server or not)."""
        with self.lock:
            return sum(1 for r in self.log if r.method == method and path_contains in r.path)

    def scheduler_actions(self) -> list[str]:
        """The scheduler actions that reached the server, in order (pauseJobs, resumeJobs)."""
        with self.lock:
            actions = [
                r.query.split("_action=", 1)[1].split("&", 1)[0]
                for r in self.log
                if r.forwarded and r.path.endswith("/scheduler/job") and "_action=" in r.query
            ]
        # listCurrentlyExecutingJobs (the wait for a running liveSync) changes nothing
        return [a for a in actions if a in ("pauseJobs", "resumeJobs")]

    # --- serving raw streams: one client connection, one request ----------------------

    async def _open(self, port: int) -> int:
        tls: dict[str, object] = {"ssl": self.tls, "ssl_handshake_timeout": 5} if self.tls else {}
        self._server = await asyncio.start_server(self._client, "127.0.0.1", port, **tls)  # type: ignore[arg-type]
        return int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._one_request(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = [line for line in lines[1:] if line]
        length = next(
            (int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:")),
            0,
        )
        body = await reader.readexactly(length) if length else b""
        path, _, query = target.partition("?")
        rule = self._match(method, target)
        action = rule.action if rule else "pass"

        if action in ("status", "reset") and rule is not None and rule.before is not None:
            await asyncio.to_thread(rule.before)
        if action == "status":
            self._record(method, path, query, forwarded=False)
            await self._answer_error(writer, rule.status if rule else 503)
            return
        if action == "reset":
            self._record(method, path, query, forwarded=False)
            _abort(writer)
            return
        if action == "delay_before" and rule is not None:
            try:  # the client hanging up during the delay means nothing must arrive
                gone = await asyncio.wait_for(reader.read(1), rule.seconds) == b""
            except TimeoutError:
                gone = False
            if gone:
                self._record(method, path, query, forwarded=False)
                return
        if rule is not None and rule.before is not None:
            await asyncio.to_thread(rule.before)
        kept = [h for h in headers if not h.lower().startswith(("connection:", "keep-alive:"))]
        request = "\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode("latin-1")
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        up_writer.write(request + body)
        await up_writer.drain()
        answer = await up_reader.read()  # until the server closes: Connection: close
        up_writer.close()
        self._record(method, path, query, forwarded=True)
        if rule is not None and rule.after is not None:
            await asyncio.to_thread(rule.after)

        if action == "drop_after":
            _abort(writer)
            return
        if action == "delay_after" and rule is not None:
            await asyncio.sleep(rule.seconds)
        if action == "garble":
            status_line = answer.split(b"\r\n", 1)[0]
            garbled = b'{"_id": "trunc'
            answer = (
                status_line
                + b"\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(garbled)).encode()
                + b"\r\n\r\n"
                + garbled
            )
        writer.write(_close_after(answer))
        await writer.drain()

    def _match(self, method: str, target: str) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if rule.remaining > 0 and rule.matches(method, target):
                    rule.remaining -= 1
                    return rule
        return None

    def _record(self, method: str, path: str, query: str, *, forwarded: bool) -> None:
        with self.lock:
            self.log.append(ProxiedRequest(method, path, forwarded, query))

    async def _answer_error(self, writer: asyncio.StreamWriter, status: int) -> None:
        body = b'{"code":%d,"reason":"Injected","message":"injected by the fault proxy"}' % status
        writer.write(
            b"HTTP/1.1 %d Injected\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (status, len(body)) + body
        )
        await writer.drain()


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if isinstance(transport, asyncio.Transport):
        transport.abort()


def _close_after(answer: bytes) -> bytes:
    """The server's answer with its Connection header replaced by ``close``."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    lines = [
        line
        for line in head.split(b"\r\n")
        if not line.lower().startswith((b"connection:", b"keep-alive:"))
    ]
    return b"\r\n".join([*lines, b"Connection: close"]) + sep + body
