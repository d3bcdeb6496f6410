"""The three request dialects of the KB procedure, and how ``Auto`` picks one."""

from __future__ import annotations

import enum
import re

__all__ = ["Flavour", "flavour_for_version"]


class Flavour(enum.StrEnum):
    """The request dialect: which headers and queries IDM expects (``Auto`` reads the version)."""

    AUTO = "Auto"
    IDM7 = "IDM7"
    LEGACY = "Legacy"
    IDENTITY_CLOUD = "IdentityCloud"

    @classmethod
    def parse(cls, text: str) -> Flavour:
        """Accept the resource's names and the CLI's lower-case ones (auto, idm7, legacy, cloud)."""
        lowered = text.strip().lower()
        aliases = {"cloud": cls.IDENTITY_CLOUD, "identitycloud": cls.IDENTITY_CLOUD}
        if lowered in aliases:
            return aliases[lowered]
        for member in cls:
            if member.value.lower() == lowered:
                return member
        raise ValueError(f"unknown api flavour {text!r}: use Auto, IDM7, Legacy or IdentityCloud")

    @property
    def sends_api_version(self) -> bool:
        """IDM 7+ and Identity Cloud get ``Accept-API-Version: resource=1.0``; before 7, none."""
        return self in (Flavour.IDM7, Flavour.IDENTITY_CLOUD)

    @property
    def list_query(self) -> dict[str, str]:
        if self is Flavour.LEGACY:
            return {"_queryId": "query-all-ids"}
        return {"_queryFilter": "true", "_fields": "_id"}


_major = re.compile(r"^\s*(\d+)")


def flavour_for_version(product_version: str) -> Flavour:
    """``7.0.2`` → IDM7, ``6.5.0`` → Legacy. Unknown shapes are treated as current IDM."""
    match = _major.match(product_version)
    if match and int(match.group(1)) < 7:
        return Flavour.LEGACY
    return Flavour.IDM7
