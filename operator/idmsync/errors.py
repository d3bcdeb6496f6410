"""One exception hierarchy for everything that can go wrong in a reset.

Every error carries a machine-readable ``reason`` (it becomes the status
``reason`` on the resource and the CLI's error prefix) and belongs to one
category, as httpx groups its exceptions, so callers catch by category instead
of listing classes:

- :class:`BadInput`: the spec or command line breaks a rule (CLI exit 2; not requeued)
- :class:`ReferenceMissing`: a Secret, key or Service it names is missing (requeued)
- :class:`CredentialsRefused`: 401 / 403 (exit 3; not requeued)
- :class:`TransportFailure`: refused, reset, timed out, answer lost (exit 4; requeued)
- :class:`ServerFailure`: 5xx, liveSync failed on the server (exit 4; requeued)
- :class:`ServerRefused`: the server said no or made no sense: 404, 409, 412, bad JSON
  (exit 1; only a 412 is requeued)
- :class:`VerifyTimeout` (exit 5) and :class:`InternalError` (a bug; requeued) stand alone.

Two decisions are kept apart. *Repeating one HTTP request* is the client's:
only a safe or idempotent request, or one proven never sent (the connection
was not made), is sent again. ``outcome_unknown`` marks an error after which a
change (DELETE, PUT, liveSync) may or may not have been carried out: the
workflow re-reads the stage to learn which, and never repeats it blindly.
*Running the reset again* is the controller's: ``requeue`` says whether a
later run could succeed, within one budget per reset.

Messages never contain secret values: they are built from status codes, URLs
(which the contract forbids to carry user-info) and the server's own error
text, and :func:`redact` scrubs known secret values from anything else.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "BadInput",
    "ChangelogUnavailable",
    "CredentialsRefused",
    "Forbidden",
    "IdmSyncError",
    "InternalError",
    "InvalidSpec",
    "InvalidStatus",
    "KubernetesUnavailable",
    "LiveSyncFailed",
    "NotFound",
    "ProtocolError",
    "ReconFailed",
    "ReconTimeout",
    "ReferenceMissing",
    "RevisionConflict",
    "SecretKeyMissing",
    "SecretNotFound",
    "ServerError",
    "ServerFailure",
    "ServerRefused",
    "ServerUnreachable",
    "ServiceNotFound",
    "TargetNotAllowed",
    "TransportFailure",
    "Unauthorized",
    "VerifyTimeout",
    "clip",
    "redact",
]

REDACTED = "***"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of every non-empty secret value in ``text``."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


MAX_QUOTED = 300


def clip(text: str, secrets: Iterable[str]) -> str:
    """A server's text made fit to quote in a message: redacted, then cut short."""
    text = redact(text, secrets)
    return text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED] + "…"


class IdmSyncError(Exception):
    """Base of every idmsync error."""

    reason: str = "Error"
    #: whether running the reset again later could succeed (the controller's decision)
    requeue: bool = False

    def __init__(
        self, message: str, *, status: int | None = None, outcome_unknown: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        #: the request may have been carried out although no answer says so
        self.outcome_unknown = outcome_unknown

    def __str__(self) -> str:
        return self.message


# --- categories ----------------------------------------------------------------------


class BadInput(IdmSyncError):
    """The request breaks a rule: fix the spec or the command line. Nothing was sent."""


class ReferenceMissing(IdmSyncError):
    """Something the resource names (a Secret, a key, a Service) does not exist yet."""

    requeue = True  # creating it fixes it


class CredentialsRefused(IdmSyncError):
    """The server (or the token endpoint) refused the credentials."""


class TransportFailure(IdmSyncError):
    """No usable answer: connection refused or reset, DNS, timeout, answer lost."""

    requeue = True


class ServerFailure(IdmSyncError):
    """The server answered that it failed (5xx)."""

    requeue = True


class ServerRefused(IdmSyncError):
    """The server answered no, or something idmsync does not understand."""


# --- BadInput ------------------------------------------------------------------------


class InvalidSpec(BadInput):
    """The request breaks a rule of the API contract (pattern, exactly-one-of, ...)."""

    reason = "InvalidSpec"


class TargetNotAllowed(BadInput):
    """The server named is outside the allow-list, or would receive credentials in clear."""

    reason = "TargetNotAllowed"


class InvalidStatus(BadInput):
    """The resource's status cannot be read safely; resuming from it could repeat a change."""

    reason = "InvalidStatus"


# --- ReferenceMissing ----------------------------------------------------------------


class SecretNotFound(ReferenceMissing):
    """A Secret the resource names does not exist in its namespace (yet)."""

    reason = "SecretNotFound"


class SecretKeyMissing(ReferenceMissing):
    """The Secret exists but lacks a key the resource names."""

    reason = "SecretKeyMissing"


class ServiceNotFound(ReferenceMissing):
    """The target Service (or its named port) does not exist in the resource's namespace."""

    reason = "ServiceNotFound"


# --- CredentialsRefused --------------------------------------------------------------


class Unauthorized(CredentialsRefused):
    """401: the credentials were refused."""

    reason = "Unauthorized"


class Forbidden(CredentialsRefused):
    """403: the credentials are valid but may not do this."""

    reason = "Forbidden"


# --- ServerRefused -------------------------------------------------------------------


class NotFound(ServerRefused):
    """404: on a stage the engine turns it into the result ``AlreadyAbsent``."""

    reason = "NotFound"


class RevisionConflict(ServerRefused):
    """412: the stage changed since we read it (a liveSync ran). Re-read and retry."""

    reason = "RevisionConflict"
    requeue = True


class ProtocolError(ServerRefused):
    """The server answered something we do not understand (409, bad JSON, odd shapes)."""

    reason = "ProtocolError"


def redirect_refused(where: str, status: int, location: str | None) -> ProtocolError:
    """A 3xx answer: credentials are never re-sent on a redirect, so it is an error."""
    return ProtocolError(
        f"{where}: redirected ({status}) to {location or '?'}; "
        "idmsync never follows redirects with credentials — point it at the final URL",
        status=status,
    )


class ChangelogUnavailable(ServerRefused):
    """The directory of a drift check shows no change numbers (changelog off, or hidden)."""

    reason = "ChangelogUnavailable"


# --- ServerFailure -------------------------------------------------------------------


class ServerError(ServerFailure):
    """5xx from the server."""

    reason = "ServerError"


class ReconFailed(ServerFailure):
    """The reconciliation run after the reset ended FAILED or CANCELED.

    Requeued: the stages are done and recorded, a new try runs only the reconciliation.
    """

    reason = "ReconFailed"


class LiveSyncFailed(ServerFailure):
    """liveSync failed for the source (IDM answered 5xx, or reported ``lastException``).

    Requeued: the stage is already reset, and a new run resumes at the trigger.
    """

    reason = "LiveSyncFailed"


# --- TransportFailure ----------------------------------------------------------------


class ServerUnreachable(TransportFailure):
    """Connection refused or reset, DNS failure, timeout, an answer cut off."""

    reason = "ServerUnreachable"


class KubernetesUnavailable(TransportFailure):
    """The operator's own calls to the Kubernetes API kept failing (connection refused or
    cut, timeouts, 409, 429, 5xx) after a few quick retries: an API server restarting."""

    reason = "KubernetesUnavailable"


# --- the rest ------------------------------------------------------------------------


class VerifyTimeout(IdmSyncError):
    """The stage did not come back with a token within the time allowed."""

    reason = "VerifyTimeout"


class ReconTimeout(IdmSyncError):
    """The reconciliation did not finish within the time allowed (it is left running)."""

    reason = "ReconTimeout"


class InternalError(IdmSyncError):
    """A bug: something idmsync did not expect. Requeued, then reported."""

    reason = "InternalError"
    requeue = True
