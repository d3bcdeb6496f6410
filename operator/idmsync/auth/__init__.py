"""Credential strategies behind one small interface (:class:`Credentials`)."""

from idmsync.auth.base import AdminCredentials, BearerToken, Credentials, Secret

__all__ = ["AdminCredentials", "BearerToken", "Credentials", "Secret"]
