"""The contract's validation rules, checked again by the engine.

The API server enforces the same patterns through the CRD; the engine re-checks
them so the CLI and any other caller get the same protection before a single
request is made.
"""

from __future__ import annotations

import re

from idmsync.errors import InvalidSpec
from idmsync.urls import parse_url

__all__ = [
    "CONTEXT_PATH_PATTERN",
    "MAPPING_PATTERN",
    "MAX_SOURCE_LENGTH",
    "SOURCE_PATTERN",
    "STAGE_ID_PATTERN",
    "normalise_server_url",
    "stage_id_for_source",
    "validate_context_path",
    "validate_mapping",
    "validate_source",
    "validate_stage_id",
]

STAGE_ID_PATTERN = r"^[A-Za-z0-9_]{1,256}$"
SOURCE_PATTERN = r"^system/[A-Za-z0-9_][A-Za-z0-9_.-]*/[A-Za-z0-9_][A-Za-z0-9_.-]*$"
#: system/ + a connector and a type: the longest source whose stage id fits 256 characters
MAX_SOURCE_LENGTH = 258
CONTEXT_PATH_PATTERN = r"^(/[A-Za-z0-9_-]+)+$"
URL_PATTERN = (
    r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$"
)

#: a sync mapping's name, as IDM's sync.json names them (systemLdapAccounts_managedUser)
MAPPING_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,255}$"

_stage_id = re.compile(STAGE_ID_PATTERN)
_mapping = re.compile(MAPPING_PATTERN)
_source = re.compile(SOURCE_PATTERN)
_context_path = re.compile(CONTEXT_PATH_PATTERN)


def validate_stage_id(stage_id: str) -> str:
    if not _stage_id.fullmatch(stage_id):
        raise InvalidSpec(f"stage id {stage_id!r} does not match {STAGE_ID_PATTERN}")
    return stage_id


def validate_source(source: str) -> str:
    """``system/<connector>/<type>``, no ``.`` or ``..`` segment: it becomes a URL path."""
    if (
        len(source) > MAX_SOURCE_LENGTH
        or not _source.fullmatch(source)
        or any(p in (".", "..") for p in source.split("/"))
    ):
        raise InvalidSpec(
            f"source {source!r} does not match {SOURCE_PATTERN} (system/<connector>/<type>)"
        )
    return source


def validate_mapping(mapping: str) -> str:
    if not _mapping.fullmatch(mapping):
        raise InvalidSpec(f"mapping {mapping!r} does not match {MAPPING_PATTERN}")
    return mapping


def stage_id_for_source(source: str) -> str:
    """``system/ldap/account`` → ``SYSTEMLDAPACCOUNT``, as IDM names the sync stage."""
    return validate_stage_id(validate_source(source).replace("/", "").upper())


def validate_context_path(context_path: str) -> str:
    if not _context_path.fullmatch(context_path):
        raise InvalidSpec(f"contextPath {context_path!r} does not match {CONTEXT_PATH_PATTERN}")
    return context_path


def normalise_server_url(url: str) -> str:
    """Accept ``http(s)://host[:port]`` only: no path, query, user-info or fragment."""
    return parse_url(url, schemes=("http", "https"), what="url").text
