"""Credential strategies behind one small interface (:class:`Credentials`)."""

from idmsync.auth.base import AdminCredentials, BearerToken, Credentials, Secret
from idmsync.auth.oauth import (
    ClientCredentialsFlow,
    CredentialsRegistry,
    ServiceAccountFlow,
    audience_for,
)

__all__ = [
    "AdminCredentials",
    "BearerToken",
    "ClientCredentialsFlow",
    "Credentials",
    "CredentialsRegistry",
    "Secret",
    "ServiceAccountFlow",
    "audience_for",
]
