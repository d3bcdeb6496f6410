"""The reset workflow and the IDM protocol: asyncio + httpx, no kopf, no kubernetes.

Usable from the CLI, the operator and tests alike.
"""

from idmsync.engine.client import IdmClient, forget_server_versions
from idmsync.engine.flavour import Flavour, flavour_for_version
from idmsync.engine.model import (
    Action,
    ResetOptions,
    ServerInfo,
    Stage,
    StageProgress,
    StageRef,
    StageResult,
    Step,
)
from idmsync.engine.policy import AllowPattern, TargetPolicy
from idmsync.engine.retry import RetryPolicy
from idmsync.engine.transport import TlsOptions, make_http_client
from idmsync.engine.workflow import Event, Observer, ResetOutcome, run_reset, select_stages

__all__ = [
    "Action",
    "AllowPattern",
    "Event",
    "Flavour",
    "IdmClient",
    "Observer",
    "ResetOptions",
    "ResetOutcome",
    "RetryPolicy",
    "ServerInfo",
    "Stage",
    "StageProgress",
    "StageRef",
    "StageResult",
    "Step",
    "TargetPolicy",
    "TlsOptions",
    "flavour_for_version",
    "forget_server_versions",
    "make_http_client",
    "run_reset",
    "select_stages",
]
