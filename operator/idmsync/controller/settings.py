"""Operator settings: ``IDMSYNC_*`` environment variables, each also an ``idmsync run`` flag."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field

from idmsync.engine import TargetPolicy

__all__ = ["OperatorSettings", "add_run_arguments"]

DEFAULT_SERVICE_URL = "{scheme}://{name}.{namespace}.svc:{port}"


@dataclass(frozen=True)
class OperatorSettings:
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    allowed_targets: str = ""
    metrics_port: int = 8080
    health_port: int = 8081
    log_format: str = "text"
    verbose: bool = False
    #: how many times a resource's reset is retried on transient failure before it fails
    retry_limit: int = 8
    retry_backoff: float = 5.0  # first delay, doubled each retry ...
    retry_backoff_max: float = 300.0  # ... up to this
    http_attempts: int = 5  # tries per HTTP request on transient errors
    http_backoff: float = 0.5
    #: concurrent HTTP requests per IDM server, across all resources
    max_requests_per_server: int = 4
    #: resources handled at once (kopf workers); 0: no limit. The rest wait their turn: a
    #: thousand at once held 300 MB and made every one slower (docs/benchmarks.md)
    max_concurrent_resets: int = 50
    #: how a Service target becomes a URL; outside a cluster (development) point it elsewhere
    service_url_template: str = DEFAULT_SERVICE_URL
    #: kopf peering: None auto-detects, "" runs standalone
    peering: str | None = None
    #: seconds a replica stays "alive" to its peers without a keep-alive: how long a standby
    #: waits before it takes over from a replica that died without saying goodbye
    peering_lifetime: int = 60
    #: on SIGTERM, how long resets in progress may take to finish before they are cancelled
    #: at their current step (keep it below the pod's terminationGracePeriodSeconds)
    shutdown_grace: float = 20.0
    watch_timeout: int = 300
    policy: TargetPolicy = field(init=False)

    def __post_init__(self) -> None:
        policy = TargetPolicy.from_patterns(self.allowed_targets, allow_loopback=False)
        object.__setattr__(self, "policy", policy)

    def service_url(self, *, scheme: str, name: str, namespace: str, port: int) -> str:
        return self.service_url_template.format(
            scheme=scheme, name=name, namespace=namespace, port=port
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> OperatorSettings:
        namespaces = tuple(n.strip() for n in (args.namespaces or "").split(",") if n.strip())
        return cls(
            namespaces=namespaces,
            allowed_targets=args.allowed_targets or "",
            metrics_port=args.metrics_port,
            health_port=args.health_port,
            log_format=args.log_format,
            verbose=args.verbose,
            retry_limit=args.retry_limit,
            retry_backoff=args.retry_backoff,
            max_requests_per_server=args.max_requests_per_server,
            max_concurrent_resets=args.max_concurrent_resets,
            service_url_template=args.service_url_template,
            peering=args.peering,
            peering_lifetime=args.peering_lifetime,
            shutdown_grace=args.shutdown_grace,
        )


def add_run_arguments(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """The ``idmsync run`` flags; each defaults to its ``IDMSYNC_*`` variable."""

    def default(name: str, fallback: str) -> str:
        return env.get(f"IDMSYNC_{name}", fallback)

    parser.add_argument(
        "--namespaces",
        default=default("NAMESPACES", ""),
        help="comma-separated namespaces to watch (IDMSYNC_NAMESPACES; default all)",
    )
    parser.add_argument(
        "--allowed-targets",
        default=default("ALLOWED_TARGETS", ""),
        help="host patterns url/tenant targets may name (IDMSYNC_ALLOWED_TARGETS)",
    )
    parser.add_argument("--metrics-port", type=int, default=int(default("METRICS_PORT", "8080")))
    parser.add_argument("--health-port", type=int, default=int(default("HEALTH_PORT", "8081")))
    parser.add_argument(
        "--log-format", choices=("text", "json"), default=default("LOG_FORMAT", "text")
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument(
        "--retry-limit",
        type=int,
        default=int(default("RETRY_LIMIT", "8")),
        help="retries of a reset on transient failure before it fails (IDMSYNC_RETRY_LIMIT)",
    )
    parser.add_argument(
        "--retry-backoff",
        type=float,
        default=float(default("RETRY_BACKOFF", "5")),
        help="first retry delay in seconds, doubled per retry (IDMSYNC_RETRY_BACKOFF)",
    )
    parser.add_argument(
        "--max-requests-per-server",
        type=int,
        default=int(default("MAX_REQUESTS_PER_SERVER", "4")),
    )
    parser.add_argument(
        "--max-concurrent-resets",
        type=int,
        default=int(default("MAX_CONCURRENT_RESETS", "50")),
        help="resources handled at once; 0: no limit (IDMSYNC_MAX_CONCURRENT_RESETS)",
    )
    parser.add_argument(
        "--service-url-template",
        default=default("SERVICE_URL_TEMPLATE", DEFAULT_SERVICE_URL),
        help="how a Service target becomes a URL (IDMSYNC_SERVICE_URL_TEMPLATE)",
    )
    parser.add_argument(
        "--peering",
        default=env.get("IDMSYNC_PEERING"),
        help='kopf peering name; "" runs standalone (IDMSYNC_PEERING; default auto-detect)',
    )
    parser.add_argument(
        "--peering-lifetime",
        type=int,
        default=int(default("PEERING_LIFETIME", "60")),
        help="seconds before a silent replica is taken over (IDMSYNC_PEERING_LIFETIME)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=float(default("SHUTDOWN_GRACE", "20")),
        help="on SIGTERM, seconds resets in progress may take to finish (IDMSYNC_SHUTDOWN_GRACE)",
    )
