"""The ``idmsync`` command: the same engine as the operator, no Kubernetes needed.

Credentials come only from the environment, never from argv (argv is visible to
every user of the machine through ``ps``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn, TextIO

from idmsync.auth import (
    AdminCredentials,
    BearerToken,
    ClientCredentialsFlow,
    Credentials,
    Secret,
    ServiceAccountFlow,
)
from idmsync.auth.oauth import DEFAULT_SCOPE
from idmsync.engine import (
    Action,
    AllowPattern,
    Event,
    Flavour,
    IdmClient,
    ResetOptions,
    ResetOutcome,
    RetryPolicy,
    TargetPolicy,
    TlsOptions,
    make_http_client,
    run_reset,
    select_stages,
)
from idmsync.errors import (
    BadInput,
    CredentialsRefused,
    IdmSyncError,
    InvalidSpec,
    ServerFailure,
    TransportFailure,
    VerifyTimeout,
    redact,
)

__all__ = ["EXIT_CODES", "main"]

#: exit status by error category (see idmsync.errors); anything else that fails exits 1
EXIT_CODES: dict[type[IdmSyncError], int] = {
    BadInput: 2,
    CredentialsRefused: 3,
    TransportFailure: 4,
    ServerFailure: 4,
    VerifyTimeout: 5,
}


class _RedactingFilter(logging.Filter):
    """Scrubs the credentials' secrets, asked afresh per record: OAuth tokens change."""

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self.credentials = credentials

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.credentials.secret_values())
        record.args = None
        return True


def credentials_from_env(
    env: Mapping[str, str],
    *,
    server_url: str | None = None,
    allow_insecure_http: bool = False,
) -> Credentials:
    """Pick the one credential set present in the environment.

    ``server_url`` (the ``--url`` server) is the default Identity Cloud tenant of a
    service account; ``allow_insecure_http`` lets a token endpoint be plain http on a
    host that is not loopback.
    """
    sets = {
        "IDM_USERNAME/IDM_PASSWORD": ("IDM_USERNAME", "IDM_PASSWORD"),
        "IDM_BEARER_TOKEN": ("IDM_BEARER_TOKEN",),
        "IDM_CLIENT_ID/IDM_CLIENT_SECRET/IDM_TOKEN_URL": (
            "IDM_CLIENT_ID",
            "IDM_CLIENT_SECRET",
            "IDM_TOKEN_URL",
        ),
        "IDM_SERVICE_ACCOUNT_ID/IDM_SERVICE_ACCOUNT_JWK_FILE": (
            "IDM_SERVICE_ACCOUNT_ID",
            "IDM_SERVICE_ACCOUNT_JWK_FILE",
        ),
    }
    present = [name for name, names in sets.items() if any(n in env for n in names)]
    if len(present) > 1:
        raise InvalidSpec(
            f"set exactly one credential set, not {' and '.join(present)} "
            "(credentials are read from the environment, never from the command line)"
        )
    if not present:
        raise InvalidSpec(
            "no credentials: set IDM_USERNAME and IDM_PASSWORD, or IDM_BEARER_TOKEN, or "
            "IDM_CLIENT_ID, IDM_CLIENT_SECRET and IDM_TOKEN_URL (OAuth client credentials), "
            "or IDM_SERVICE_ACCOUNT_ID and IDM_SERVICE_ACCOUNT_JWK_FILE (Identity Cloud "
            "service account); credentials are read from the environment, never from the "
            "command line"
        )
    (chosen,) = present
    optional = {
        "IDM_SCOPE": ("IDM_CLIENT_ID", "IDM_SERVICE_ACCOUNT_ID"),
        "IDM_CLIENT_AUTH": ("IDM_CLIENT_ID",),
        "IDM_TENANT_URL": ("IDM_SERVICE_ACCOUNT_ID",),
    }
    for variable, owners in optional.items():
        if variable in env and not any(owner in sets[chosen] for owner in owners):
            raise InvalidSpec(f"{variable} does not apply to {chosen}")
    if chosen == "IDM_BEARER_TOKEN":
        return BearerToken(Secret(env["IDM_BEARER_TOKEN"]))
    names = sets[chosen]
    # a password may be empty; every other member of a set must have a value
    if any(not env.get(n) and not (n == "IDM_PASSWORD" and n in env) for n in names):
        raise InvalidSpec(f"{', '.join(names[:-1])} and {names[-1]} go together")
    if chosen == "IDM_USERNAME/IDM_PASSWORD":
        return AdminCredentials(env["IDM_USERNAME"], Secret(env["IDM_PASSWORD"]))

    token_policy = TargetPolicy(
        allowed=(
            AllowPattern(host="*", scheme="https"),
            *((AllowPattern(host="*", scheme="http"),) if allow_insecure_http else ()),
        ),
        allow_list_name="the servers this command may reach",
        http_hint="pass --allow-insecure-http",
    )
    scope = env.get("IDM_SCOPE", DEFAULT_SCOPE)
    flow: ClientCredentialsFlow | ServiceAccountFlow
    if chosen.startswith("IDM_CLIENT_ID"):
        method = env.get("IDM_CLIENT_AUTH", "form")
        if method not in ("form", "basic"):
            raise InvalidSpec(f"IDM_CLIENT_AUTH={method}: use form or basic")
        flow = ClientCredentialsFlow(
            env["IDM_TOKEN_URL"],
            env["IDM_CLIENT_ID"],
            Secret(env["IDM_CLIENT_SECRET"]),
            scope=scope,
            auth_method="basic" if method == "basic" else "form",
        )
    else:
        tenant = env.get("IDM_TENANT_URL") or server_url
        if not tenant:
            raise InvalidSpec("set IDM_TENANT_URL (the Identity Cloud tenant, https://<tenant>)")
        path = env["IDM_SERVICE_ACCOUNT_JWK_FILE"]
        try:
            with open(path, encoding="utf-8") as handle:
                jwk_text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise InvalidSpec(f"IDM_SERVICE_ACCOUNT_JWK_FILE {path}: {reason}") from None
        flow = ServiceAccountFlow(
            tenant.rstrip("/"), env["IDM_SERVICE_ACCOUNT_ID"], Secret(jwk_text), scope=scope
        )
    token_policy.check(flow.token_url)
    return flow


def parse_token(text: str) -> Any:
    """``--set-token 100`` is the integer 100; JSON is taken as JSON; anything else a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _version() -> str:
    try:
        return version("idmsync-operator")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="idmsync",
        description="Reset the liveSync syncToken of ForgeRock IDM / Identity Cloud.",
    )
    parser.add_argument("--version", action="version", version=f"idmsync {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    server = argparse.ArgumentParser(add_help=False)
    server.add_argument("-v", "--verbose", action="store_true", help="log each HTTP request")
    server.add_argument("--url", required=True, help="IDM server, http(s)://host[:port]")
    server.add_argument("--context-path", default="/openidm", help="default /openidm")
    server.add_argument(
        "--api",
        default="auto",
        type=Flavour.parse,
        help="auto | idm7 | legacy | cloud (default auto: read info/version)",
    )
    server.add_argument("--ca-file", help="PEM file of CAs to trust for https")
    server.add_argument(
        "--insecure-skip-verify", action="store_true", help="do not verify TLS (never in prod)"
    )
    server.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow plain http to a host that is not loopback (credentials travel in clear)",
    )
    server.add_argument("--output", choices=("text", "json"), default="text")
    server.add_argument(
        "--retries",
        type=int,
        default=5,
        help="tries per read on transient errors; a change whose answer was lost is read "
        "back and tried again only if it did not happen, at most 3 times (5)",
    )
    server.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for each answer (30)"
    )
    server.add_argument(
        "--retry-delay", type=float, default=0.5, help="first backoff delay in seconds (0.5)"
    )

    reset = commands.add_parser("reset", parents=[server], help="reset sync stages")
    reset.add_argument("--source", action="append", default=[], help="system/<connector>/<type>")
    reset.add_argument("--id", action="append", default=[], dest="ids", help="stage id")
    reset.add_argument("--all", action="store_true", help="every stage the server lists")
    reset.add_argument("--set-token", help="write this token instead of deleting the stage")
    reset.add_argument("--no-livesync", action="store_true", help="do not trigger liveSync")
    reset.add_argument("--no-verify", action="store_true", help="do not wait for the stage")
    reset.add_argument("--verify-timeout", type=float, default=120.0, help="seconds (120)")
    reset.add_argument("--pause-schedules", action="store_true", help="pause IDM's scheduler")
    reset.add_argument("--dry-run", action="store_true", help="read and report, change nothing")

    commands.add_parser("stages", parents=[server], help="list stage ids, revs and tokens")

    run = commands.add_parser("run", help="run the operator (kopf)")
    from idmsync.controller.settings import add_run_arguments

    add_run_arguments(run, os.environ)
    return parser


def _policy(args: argparse.Namespace) -> TargetPolicy:
    patterns = [AllowPattern(host="*", scheme="https")]
    if args.allow_insecure_http:
        patterns.append(AllowPattern(host="*", scheme="http"))
    return TargetPolicy(
        allowed=tuple(patterns),
        allow_list_name="the servers this command may reach",
        http_hint="pass --allow-insecure-http",
    )


def _tls(args: argparse.Namespace) -> TlsOptions:
    ca_pem = None
    if args.ca_file:
        try:
            with open(args.ca_file, encoding="utf-8") as handle:
                ca_pem = handle.read()
        except OSError as exc:
            raise InvalidSpec(f"--ca-file {args.ca_file}: {exc.strerror}") from None
    return TlsOptions(ca_pem=ca_pem, insecure_skip_verify=args.insecure_skip_verify)


def _options(args: argparse.Namespace) -> ResetOptions:
    return ResetOptions(
        action=Action.SET if args.set_token is not None else Action.DELETE,
        token=parse_token(args.set_token) if args.set_token is not None else None,
        trigger=not args.no_livesync,
        verify=not args.no_verify,
        verify_timeout=args.verify_timeout,
        pause_schedules=args.pause_schedules,
        dry_run=args.dry_run,
    )


def _outcome_json(outcome: ResetOutcome) -> dict[str, Any]:
    return {
        "server": {
            "url": outcome.server.url,
            "api": str(outcome.server.flavour),
            "version": outcome.server.version,
        },
        "stages": [
            {
                k: (str(v) if k in ("step", "result") and v is not None else v)
                for k, v in asdict(stage).items()
                if k != "changed_rev"  # engine bookkeeping, not part of the audit
            }
            for stage in outcome.stages
        ],
    }


async def _run(args: argparse.Namespace, credentials: Credentials, out: TextIO) -> None:
    server_url = args.url.rstrip("/")
    client_tls = _tls(args)
    async with make_http_client(client_tls, timeout=args.timeout) as http:
        client = IdmClient(
            server_url,
            credentials,
            http,
            flavour=args.api,
            context_path=args.context_path,
            retry=RetryPolicy(attempts=max(1, args.retries), base_delay=args.retry_delay),
        )
        policy = _policy(args)
        policy.check(client.server_url)
        await policy.check_resolved(client.server_url)
        if isinstance(credentials, ClientCredentialsFlow | ServiceAccountFlow):
            await policy.check_resolved(credentials.token_url)
        if args.command == "stages":
            await _stages(client, args.output, out)
            return
        stages = await select_stages(client, sources=args.source, ids=args.ids, all_stages=args.all)

        async def show(event: Event) -> None:
            if args.output == "text" or args.verbose:
                print(f"  {event.kind:<18} {event.message}", file=sys.stderr, flush=True)

        outcome = await run_reset(client, stages, _options(args), observer=show)
        if args.output == "json":
            json.dump(_outcome_json(outcome), out, indent=2)
            out.write("\n")
            return
        server = outcome.server
        print(f"server {server.url} ({server.flavour}, {server.version or '?'})", file=out)
        for stage in outcome.stages:
            print(
                f"{stage.id}: {stage.result}; previous rev {stage.previous_rev} token "
                f"{stage.previous_token!r}; new token {stage.new_token!r}"
                + (f" ({stage.message})" if stage.message else ""),
                file=out,
            )


async def _stages(client: IdmClient, output: str, out: TextIO) -> None:
    rows = []
    for stage_id in await client.list_stage_ids():
        stage = await client.read_stage(stage_id)
        if stage is not None:
            rows.append({"id": stage.id, "rev": stage.rev, "syncToken": stage.sync_token})
    if output == "json":
        json.dump({"stages": rows}, out, indent=2)
        out.write("\n")
        return
    print(f"{'ID':<40} {'REV':<20} SYNCTOKEN", file=out)
    for row in rows:
        print(f"{row['id']:<40} {row['rev']:<20} {json.dumps(row['syncToken'])}", file=out)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    environment = os.environ if env is None else env
    if args.command == "run":
        from idmsync.controller.app import run_operator
        from idmsync.controller.settings import OperatorSettings

        run_operator(OperatorSettings.from_args(args))
        return 0
    credentials: Credentials | None = None
    handler = logging.StreamHandler(sys.stderr)
    try:
        credentials = credentials_from_env(
            environment, server_url=args.url, allow_insecure_http=args.allow_insecure_http
        )
        handler.addFilter(_RedactingFilter(credentials))
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            handlers=[handler],
            format="%(levelname)s %(name)s: %(message)s",
            force=True,
        )
        asyncio.run(_run(args, credentials, sys.stdout))
    except IdmSyncError as exc:
        code = next((c for t, c in EXIT_CODES.items() if isinstance(exc, t)), 1)
        secrets = credentials.secret_values() if credentials is not None else ()
        _fail(f"{exc.reason}: {redact(exc.message, secrets)}", code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    return 0


def _fail(message: str, code: int) -> NoReturn:
    print(f"idmsync: error: {message}", file=sys.stderr)
    raise SystemExit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
