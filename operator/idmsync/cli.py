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
    Drift,
    Event,
    Flavour,
    IdmClient,
    LdapChangelog,
    LdapDirectory,
    ReconcileOptions,
    ResetOptions,
    ResetOutcome,
    RetryPolicy,
    StageRef,
    TargetPolicy,
    TlsOptions,
    When,
    check_drift,
    describe,
    make_http_client,
    run_reset,
    select_stages,
    worst,
)
from idmsync.engine.recon import summary as recon_summary
from idmsync.errors import (
    BadInput,
    CredentialsRefused,
    IdmSyncError,
    InternalError,
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


#: ``idmsync check``: exit status by the worst state found (errors keep the codes above)
CHECK_EXIT_CODES: dict[Drift, int] = {
    Drift.IN_SYNC: 0,
    Drift.AHEAD: 6,
    Drift.TRIMMED: 7,
    Drift.UNKNOWN: 8,
}

#: the directory's bind password: from the environment only, like every credential
LDAP_PASSWORD_VARIABLE = "LDAP_BIND_PASSWORD"  # noqa: S105 - a name, not a password


class _RedactingFilter(logging.Filter):
    """Scrubs the credentials' secrets, asked afresh per record: OAuth tokens change."""

    def __init__(self, credentials: Credentials, others: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.credentials = credentials
        self.others = others

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = (*self.credentials.secret_values(), *self.others)
        record.msg = redact(record.getMessage(), secrets)
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
    target_policy(allow_insecure_http=allow_insecure_http).check(flow.token_url)
    return flow


def target_policy(*, allow_insecure_http: bool) -> TargetPolicy:
    """Where this command may send credentials: any https server; plain http too with
    ``--allow-insecure-http`` (loopback always; metadata addresses never)."""
    patterns = [AllowPattern(host="*", scheme="https")]
    if allow_insecure_http:
        patterns.append(AllowPattern(host="*", scheme="http"))
    return TargetPolicy(
        allowed=tuple(patterns),
        allow_list_name="the servers this command may reach",
        http_hint="pass --allow-insecure-http",
    )


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
        default=RetryPolicy.attempts,
        help="tries per read on transient errors; a change whose answer was lost is read "
        "back and tried again only if it did not happen, at most 3 times (%(default)s)",
    )
    server.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for each answer (30)"
    )
    server.add_argument(
        "--retry-delay",
        type=float,
        default=RetryPolicy.base_delay,
        help="first backoff delay in seconds (%(default)s)",
    )

    selection = argparse.ArgumentParser(add_help=False)
    selection.add_argument(
        "--source", action="append", default=[], help="system/<connector>/<type>"
    )
    selection.add_argument("--id", action="append", default=[], dest="ids", help="stage id")
    selection.add_argument("--all", action="store_true", help="every stage the server lists")

    directory = argparse.ArgumentParser(add_help=False)
    directory.add_argument(
        "--ldap-url",
        help="the directory the stages read from, ldap(s)://host[:port] (drift check); bind "
        f"password from {LDAP_PASSWORD_VARIABLE}",
    )
    directory.add_argument(
        "--ldap-bind-dn", help="bind DN for the drift check (default: $LDAP_BIND_DN)"
    )
    directory.add_argument("--ldap-start-tls", action="store_true", help="StartTLS on ldap://")
    directory.add_argument("--ldap-ca-file", help="PEM file of CAs to trust for the directory")

    check = commands.add_parser(
        "check",
        parents=[server, selection, directory],
        help="compare stage tokens with the directory's changelog (exit 0 InSync, 6 Ahead, "
        "7 Trimmed, 8 Unknown)",
    )
    check.set_defaults(command="check")

    reset = commands.add_parser(
        "reset", parents=[server, selection, directory], help="reset sync stages"
    )
    reset.add_argument(
        "--when",
        choices=("always", "out-of-sync"),
        default="always",
        help="out-of-sync: reset only the stages the drift check finds Ahead or Trimmed "
        "(needs --ldap-url)",
    )
    reset.add_argument(
        "--reconcile", metavar="MAPPING", help="after the reset, reconcile this mapping"
    )
    reset.add_argument(
        "--reconcile-timeout",
        type=float,
        default=ReconcileOptions.timeout,
        help="seconds (%(default)g)",
    )
    reset.add_argument("--set-token", help="write this token instead of deleting the stage")
    reset.add_argument("--no-livesync", action="store_true", help="do not trigger liveSync")
    reset.add_argument("--no-verify", action="store_true", help="do not wait for the stage")
    reset.add_argument(
        "--verify-timeout",
        type=float,
        default=ResetOptions.verify_timeout,
        help="seconds (%(default)g)",
    )
    reset.add_argument("--pause-schedules", action="store_true", help="pause IDM's scheduler")
    reset.add_argument("--dry-run", action="store_true", help="read and report, change nothing")

    commands.add_parser("stages", parents=[server], help="list stage ids, revs and tokens")

    run = commands.add_parser("run", help="run the operator (kopf)")
    from idmsync.controller.settings import add_run_arguments

    add_run_arguments(run)
    return parser


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
        when=When.OUT_OF_SYNC if args.when == "out-of-sync" else When.ALWAYS,
        reconcile=(
            ReconcileOptions(mapping=args.reconcile, timeout=args.reconcile_timeout)
            if args.reconcile
            else None
        ),
    )


def _changelog(
    args: argparse.Namespace, env: Mapping[str, str], policy: TargetPolicy
) -> LdapChangelog | None:
    if not getattr(args, "ldap_url", None):
        if args.command == "check":
            raise InvalidSpec("check needs --ldap-url (the directory the stages read from)")
        return None
    ca_pem = None
    if args.ldap_ca_file:
        try:
            with open(args.ldap_ca_file, encoding="utf-8") as handle:
                ca_pem = handle.read()
        except OSError as exc:
            raise InvalidSpec(f"--ldap-ca-file {args.ldap_ca_file}: {exc.strerror}") from None
    password = env.get(LDAP_PASSWORD_VARIABLE)
    bind_dn = args.ldap_bind_dn or env.get("LDAP_BIND_DN") or None
    if password and not bind_dn:
        raise InvalidSpec(f"{LDAP_PASSWORD_VARIABLE} is set but no bind DN (--ldap-bind-dn)")
    directory = LdapDirectory(
        url=args.ldap_url,
        bind_dn=bind_dn,
        password=Secret(password) if password else None,
        start_tls=args.ldap_start_tls,
        ca_pem=ca_pem,
        insecure_skip_verify=args.insecure_skip_verify,
    )
    directory.check_policy(policy)
    return LdapChangelog(directory)


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
        "reconciliation": (
            asdict(outcome.reconciliation) if outcome.reconciliation is not None else None
        ),
    }


async def _run(
    args: argparse.Namespace, credentials: Credentials, env: Mapping[str, str], out: TextIO
) -> int:
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
        policy = target_policy(allow_insecure_http=args.allow_insecure_http)
        policy.check(client.server_url)
        await policy.check_resolved(client.server_url)
        if isinstance(credentials, ClientCredentialsFlow | ServiceAccountFlow):
            await policy.check_resolved(credentials.token_url)
        if args.command == "stages":
            await _stages(client, args.output, out)
            return 0
        changelog = _changelog(args, env, policy)
        stages = await select_stages(client, sources=args.source, ids=args.ids, all_stages=args.all)
        if args.command == "check":
            if changelog is None:
                raise InternalError("check without a directory: argparse requires --ldap-url")
            return await _check(client, changelog, stages, args.output, out)

        async def show(event: Event) -> None:
            if args.output == "text" or args.verbose:
                print(f"  {event.kind:<18} {event.message}", file=sys.stderr, flush=True)

        outcome = await run_reset(
            client, stages, _options(args), observer=show, changelog=changelog
        )
        if args.output == "json":
            json.dump(_outcome_json(outcome), out, indent=2)
            out.write("\n")
            return 0
        server = outcome.server
        print(f"server {server.url} ({server.flavour}, {server.version or '?'})", file=out)
        for stage in outcome.stages:
            print(
                f"{stage.id}: {stage.result}; previous rev {stage.previous_rev} token "
                f"{stage.previous_token!r}; new token {stage.new_token!r}"
                + (f" ({stage.message})" if stage.message else ""),
                file=out,
            )
        if outcome.reconciliation is not None:
            print(recon_summary(outcome.reconciliation), file=out)
    return 0


async def _check(
    client: IdmClient,
    changelog: LdapChangelog,
    stages: Sequence[StageRef],
    output: str,
    out: TextIO,
) -> int:
    span, checks = await check_drift(client, changelog, stages)
    verdict = worst(list(checks.values()))
    if output == "json":
        report = {
            "directory": changelog.where,
            "firstChangeNumber": span.first,
            "lastChangeNumber": span.last,
            "state": str(verdict),
            "stages": [
                {
                    "id": stage_id,
                    "state": str(check.state),
                    "token": check.token,
                    "lag": check.lag,
                    "message": describe(check),
                }
                for stage_id, check in checks.items()
            ],
        }
        json.dump(report, out, indent=2)
        out.write("\n")
    else:
        print(f"directory {changelog.where}: changelog {span.first}..{span.last}", file=out)
        for stage_id, check in checks.items():
            print(f"{stage_id}: {describe(check)}", file=out)
    return CHECK_EXIT_CODES[verdict]


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
        return _operate(args, environment)
    credentials: Credentials | None = None
    handler = logging.StreamHandler(sys.stderr)
    others = tuple(p for p in (environment.get(LDAP_PASSWORD_VARIABLE),) if p)
    code = 0
    try:
        credentials = credentials_from_env(
            environment, server_url=args.url, allow_insecure_http=args.allow_insecure_http
        )
        handler.addFilter(_RedactingFilter(credentials, others))
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            handlers=[handler],
            format="%(levelname)s %(name)s: %(message)s",
            force=True,
        )
        code = asyncio.run(_run(args, credentials, environment, sys.stdout))
    except IdmSyncError as exc:
        status = next((c for t, c in EXIT_CODES.items() if isinstance(exc, t)), 1)
        secrets = (*(credentials.secret_values() if credentials is not None else ()), *others)
        _fail(f"{exc.reason}: {redact(exc.message, secrets)}", status)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    return code


def _operate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``idmsync run``: the settings from the flags given, else ``IDMSYNC_*``, else defaults."""
    from idmsync.controller.app import run_operator
    from idmsync.controller.settings import OperatorSettings, SettingsError

    try:
        settings = OperatorSettings.load(env, args)
    except SettingsError as exc:
        _fail(str(exc), 2)
    run_operator(settings)
    return 0


def _fail(message: str, code: int) -> NoReturn:
    print(f"idmsync: error: {message}", file=sys.stderr)
    raise SystemExit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
