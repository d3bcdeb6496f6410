"""One exception hierarchy for everything that can go wrong in a reset.

Every error carries a machine-readable ``reason`` (it becomes the status
``reason`` on the resource and the CLI's error prefix) and says whether trying
again could help (``retryable``): the controller maps that onto kopf's
TemporaryError / PermanentError, the engine's retry loop onto backoff.

Messages never contain secret values: they are built from status codes, URLs
(which the contract forbids to carry user-info) and the server's own error
text, and :func:`redact` scrubs known secret values from anything else.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "Forbidden",
    "IdmSyncError",
    "InternalError",
    "InvalidSpec",
    "LiveSyncFailed",
    "NotFound",
    "ProtocolError",
    "RevisionConflict",
    "SecretKeyMissing",
    "SecretNotFound",
    "ServerError",
    "ServerUnreachable",
    "ServiceNotFound",
    "TargetNotAllowed",
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
    retryable: bool = False

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message


# --- caused by the request itself: fix the spec / the command line -------------------


class InvalidSpec(IdmSyncError):
    """The request breaks a rule of the API contract (pattern, exactly-one-of, ...)."""

    reason = "InvalidSpec"


class TargetNotAllowed(IdmSyncError):
    """The server named is outside the allow-list, or would receive credentials in clear."""

    reason = "TargetNotAllowed"


class SecretNotFound(IdmSyncError):
    """A Secret the resource names does not exist in its namespace (yet)."""

    reason = "SecretNotFound"
    retryable = True  # creating the Secret fixes it


class SecretKeyMissing(IdmSyncError):
    """The Secret exists but lacks a key the resource names."""

    reason = "SecretKeyMissing"
    retryable = True


class ServiceNotFound(IdmSyncError):
    """The target Service (or its named port) does not exist in the resource's namespace."""

    reason = "ServiceNotFound"
    retryable = True


# --- the server said no -------------------------------------------------------------


class Unauthorized(IdmSyncError):
    """401: the credentials were refused."""

    reason = "Unauthorized"


class Forbidden(IdmSyncError):
    """403: the credentials are valid but may not do this."""

    reason = "Forbidden"


class NotFound(IdmSyncError):
    """404: on a stage the engine turns it into the result ``AlreadyAbsent``."""

    reason = "NotFound"


class RevisionConflict(IdmSyncError):
    """412: the stage changed since we read it (a liveSync ran). Re-read and retry."""

    reason = "RevisionConflict"
    retryable = True


class ProtocolError(IdmSyncError):
    """The server answered something we do not understand (409, bad JSON, odd shapes)."""

    reason = "ProtocolError"


class LiveSyncFailed(IdmSyncError):
    """liveSync failed for the source (IDM answered 5xx, or reported ``lastException``).

    Retried: the stage is already reset, and a retry resumes at the trigger.
    """

    reason = "LiveSyncFailed"
    retryable = True


class VerifyTimeout(IdmSyncError):
    """The stage did not come back with a token within the time allowed."""

    reason = "VerifyTimeout"


# --- transient: worth a retry with backoff ------------------------------------------


class ServerUnreachable(IdmSyncError):
    """Connection refused or reset, DNS failure, timeout."""

    reason = "ServerUnreachable"
    retryable = True


class ServerError(IdmSyncError):
    """5xx from the server."""

    reason = "ServerError"
    retryable = True


class InternalError(IdmSyncError):
    """A bug: something idmsync did not expect. Retried, then reported."""

    reason = "InternalError"
    retryable = True
