"""The resource's models apply the engine's own rules, and say so as validation errors."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from idmsync.auth.oauth import DEFAULT_SCOPE
from idmsync.controller.models import SyncTokenResetSpec

SPEC: dict[str, Any] = {
    "target": {"url": "https://idm.example.com"},
    "auth": {"adminSecretRef": {"name": "idm-admin"}},
    "stages": {"sources": ["system/ldap/account"]},
}
CHECK = {"check": {"ldap": {"url": "ldaps://ds.example.com"}}}
CLIENT = {"tokenUrl": "https://am.example.com/am/oauth2/access_token", "secretRef": {"name": "c"}}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        # what only the engine's checks (not a Field's pattern) refuse: a port out of range, a
        # source too long or with a dot segment, user-info or a query in a token endpoint
        ({"target": {"url": "https://idm.example.com:99999"}}, "port out of range"),
        ({"check": {"ldap": {"url": "ldap://ds.example.com:70000"}}}, "port out of range"),
        ({"stages": {"sources": ["system/" + "l" * 126 + "/" + "a" * 126]}}, "source"),
        ({"stages": {"sources": ["system/ldap/.."]}}, "source"),
        ({"stages": {"ids": ["A/B"]}}, "stage id"),
        (
            {"auth": {"clientCredentials": {**CLIENT, "tokenUrl": "https://u:pw@am.example/t"}}},
            "user-info",
        ),
        (
            {"auth": {"clientCredentials": {**CLIENT, "tokenUrl": "https://am.example/t?x"}}},
            "clientCredentials.tokenUrl",
        ),
    ],
)
def test_the_engines_rules_are_validation_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        SyncTokenResetSpec.model_validate({**SPEC, **changes})
    # what the operator reports (loc and msg; pydantic's own text repeats the input)
    assert all("pw@" not in error["msg"] for error in caught.value.errors())


def test_a_source_of_the_longest_length_and_a_token_endpoint_with_a_path_pass() -> None:
    source = "system/" + "l" * 125 + "/" + "a" * 125
    spec = SyncTokenResetSpec.model_validate(
        {
            **SPEC,
            **CHECK,
            "stages": {"sources": [source]},
            "auth": {"clientCredentials": CLIENT},
        }
    )
    assert len(spec.stages.sources[0]) == 258
    assert spec.auth is not None
    assert spec.auth.client_credentials is not None
    assert spec.auth.client_credentials.scope == DEFAULT_SCOPE == "fr:idm:*"
