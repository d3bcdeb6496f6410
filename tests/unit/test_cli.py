"""The ``idmsync`` command, run as a user runs it: a subprocess, env credentials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.stub.fixtures import ADMIN_PASSWORD, ADMIN_USER, LDAP_SOURCE, LDAP_STAGE, STAGE_PATH
from tests.stub.idm_stub import IdmStub

IDMSYNC = str(Path(sys.executable).with_name("idmsync"))
BEARER = "bearer-Kx93-never-print-me"


def idmsync(
    *args: str, env: dict[str, str] | None = None, admin: bool = True
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IDM_")}
    if admin:
        environment |= {"IDM_USERNAME": ADMIN_USER, "IDM_PASSWORD": ADMIN_PASSWORD}
    environment |= env or {}
    result = subprocess.run(
        [IDMSYNC, *args, "--retry-delay", "0.01"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    for secret in (ADMIN_PASSWORD, BEARER):
        assert secret not in result.stdout + result.stderr, "a secret reached the output"
    return result


def test_version_is_the_installed_distributions() -> None:
    result = subprocess.run(
        [IDMSYNC, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    version = pyproject["project"]["version"]
    assert (result.returncode, result.stdout) == (0, f"idmsync {version}\n")


@pytest.mark.parametrize(
    ("api", "auth", "api_version"),
    [
        ("idm7", "admin", "resource=1.0"),
        ("legacy", "admin", None),
        ("cloud", "bearer", "resource=1.0"),
    ],
)
def test_reset_makes_exactly_read_delete_livesync_readback_with_the_flavours_headers(
    stub: IdmStub, api: str, auth: str, api_version: str | None
) -> None:
    stub.bearer_tokens.add(BEARER)
    result = idmsync(
        "reset",
        "--url",
        stub.url,
        "--api",
        api,
        "--source",
        LDAP_SOURCE,
        env={"IDM_BEARER_TOKEN": BEARER} if auth == "bearer" else None,
        admin=auth == "admin",
    )
    assert result.returncode == 0, result.stderr
    assert stub.steps() == [
        f"GET {STAGE_PATH}",
        f"DELETE {STAGE_PATH}",
        f"POST {LDAP_SOURCE}",
        f"GET {STAGE_PATH}",
    ]
    assert stub.requests[1].header("If-Match") == "1"
    assert stub.requests[2].query == {"_action": "liveSync"}
    assert {r.header("Accept-API-Version") for r in stub.requests} == {api_version}
    if auth == "bearer":
        assert all(r.header("Authorization") == f"Bearer {BEARER}" for r in stub.requests)
        assert all(r.header("X-OpenIDM-Password") is None for r in stub.requests)
    else:
        assert all(r.header("X-OpenIDM-Username") == ADMIN_USER for r in stub.requests)
    assert "SYSTEMLDAPACCOUNT: Deleted; previous rev 1 token 100; new token 105" in result.stdout
    assert "StageRecorded" in result.stderr, "a person sees each step as it happens"


@pytest.mark.parametrize(
    ("api", "query"),
    [
        ("idm7", {"_queryFilter": "true", "_fields": "_id"}),
        ("legacy", {"_queryId": "query-all-ids"}),
    ],
)
def test_all_lists_ids_with_the_flavours_query(
    stub: IdmStub, api: str, query: dict[str, str]
) -> None:
    result = idmsync("reset", "--url", stub.url, "--api", api, "--all", "--output", "json")
    assert result.returncode == 0, result.stderr
    assert stub.requests[0].query == query
    body = json.loads(result.stdout)
    assert body["server"]["api"] == ("IDM7" if api == "idm7" else "Legacy")
    (stage,) = body["stages"]
    assert stage["id"] == LDAP_STAGE
    assert stage["result"] == "Deleted"
    assert stage["triggered"] is False, "an id alone does not name a source to trigger"


def test_auto_reports_the_version_and_dialect(stub: IdmStub) -> None:
    result = idmsync("reset", "--url", stub.url, "--source", LDAP_SOURCE, "--output", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["server"] == {
        "url": f"{stub.url}/openidm",
        "api": "IDM7",
        "version": "7.0.2",
    }
    assert stub.steps()[0] == "GET info/version"


def test_stages_lists_ids_revs_and_tokens(stub: IdmStub) -> None:
    result = idmsync("stages", "--url", stub.url, "--output", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "stages": [{"id": LDAP_STAGE, "rev": "1", "syncToken": 100}]
    }
    text = idmsync("stages", "--url", stub.url)
    assert LDAP_STAGE in text.stdout
    assert "100" in text.stdout


def test_dry_run_changes_nothing(stub: IdmStub) -> None:
    result = idmsync("reset", "--url", stub.url, "--source", LDAP_SOURCE, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert {r.method for r in stub.requests} == {"GET"}
    assert "WouldDelete" in result.stdout


def test_set_token_writes_the_value(stub: IdmStub) -> None:
    result = idmsync("reset", "--url", stub.url, "--source", LDAP_SOURCE, "--set-token", "101")
    assert result.returncode == 0, result.stderr
    assert stub.sources[LDAP_SOURCE].applied == [102, 103, 104, 105]


@pytest.mark.parametrize(
    ("setup", "code", "reason", "requests"),
    [
        (lambda s: s.fail_next(9, 401), 3, "Unauthorized", 1),
        (lambda s: s.fail_next(9, 403), 3, "Forbidden", 1),
        (lambda s: s.fail_next(9, 503), 4, "ServerError", 5),
        (lambda s: s.fail_next(1, 409, method="DELETE"), 1, "ProtocolError", 2),
        (lambda s: s.bump_rev_before_next(99), 1, "RevisionConflict", 12),
        (lambda s: s.malformed_next(1), 1, "ProtocolError", 1),
    ],
    ids=["401", "403", "503", "409", "412-forever", "malformed"],
)
def test_each_error_class_ends_with_its_exit_code_reason_and_request_count(
    stub: IdmStub, setup: object, code: int, reason: str, requests: int
) -> None:
    setup(stub)  # type: ignore[operator]
    result = idmsync("reset", "--url", stub.url, "--api", "idm7", "--source", LDAP_SOURCE)
    assert result.returncode == code
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"idmsync: error: {reason}: ")
    assert len(stub.requests) == requests


def test_an_unreachable_server_exits_4(stub: IdmStub) -> None:
    url = stub.url
    stub.stop()
    result = idmsync("reset", "--url", url, "--source", LDAP_SOURCE, "--retries", "2")
    assert result.returncode == 4
    assert "ServerUnreachable" in result.stderr


def test_a_wrong_password_exits_3_and_never_shows_the_password(stub: IdmStub) -> None:
    result = idmsync(
        "reset",
        "--url",
        stub.url,
        "--source",
        LDAP_SOURCE,
        "-v",
        env={"IDM_PASSWORD": "Wr0ng-never-print-me"},
    )
    assert result.returncode == 3
    assert "Wr0ng-never-print-me" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "system/../repo"], "source"),
        (["--id", "A/B"], "stage id"),
        ([], "at least one stage"),
        (["--source", LDAP_SOURCE, "--url", "http://idm.example.com"], "in clear"),
        (["--source", LDAP_SOURCE, "--url", "http://169.254.169.254"], "metadata"),
        (["--source", LDAP_SOURCE, "--url", "https://2852039166"], "resolves to 169.254.169.254"),
        (["--source", LDAP_SOURCE, "--url", "https://u:p@idm.example.com"], "user-info"),
    ],
)
def test_bad_input_exits_2_before_any_request(stub: IdmStub, args: list[str], message: str) -> None:
    result = idmsync("reset", "--url", stub.url, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert stub.requests == []


def test_missing_credentials_exit_2_and_say_which_variables(stub: IdmStub) -> None:
    result = idmsync("reset", "--url", stub.url, "--source", LDAP_SOURCE, admin=False)
    assert result.returncode == 2
    assert "IDM_USERNAME" in result.stderr
    assert "IDM_BEARER_TOKEN" in result.stderr
    assert stub.requests == []


class TestLostAnswers:
    def test_a_delete_carried_out_but_unanswered_is_reported_deleted_and_sent_once(
        self, stub: IdmStub
    ) -> None:
        stub.drop_after_next(1, method="DELETE")
        result = idmsync(
            "reset", "--url", stub.url, "--api", "idm7", "--source", LDAP_SOURCE, "--output", "json"
        )
        assert result.returncode == 0, result.stderr
        assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1
        (stage,) = json.loads(result.stdout)["stages"]
        assert (stage["result"], stage["previous_rev"], stage["previous_token"]) == (
            "Deleted",
            "1",
            100,
        )
        assert "answer was lost" in stage["message"]

    def test_a_stage_livesync_recreated_after_a_lost_delete_answer_is_not_deleted(
        self, stub: IdmStub
    ) -> None:
        stub.drop_after_next(1, method="DELETE", then=lambda: stub.livesync(LDAP_SOURCE))
        result = idmsync(
            "reset", "--url", stub.url, "--api", "idm7", "--source", LDAP_SOURCE, "--no-livesync"
        )
        assert result.returncode == 0, result.stderr
        assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1
        assert stub.stage(LDAP_STAGE)["connectorData"]["syncToken"] == 105  # type: ignore[index]
        assert "SYSTEMLDAPACCOUNT: Deleted; previous rev 1 token 100" in result.stdout
        assert "answer was lost" in result.stdout

    def test_a_delete_that_times_out_after_acting_is_reported_deleted(self, stub: IdmStub) -> None:
        stub.delay_after_next(1, 2.0, method="DELETE")
        result = idmsync(
            "reset",
            "--url",
            stub.url,
            "--api",
            "idm7",
            "--source",
            LDAP_SOURCE,
            "--timeout",
            "0.5",
            "--output",
            "json",
        )
        assert result.returncode == 0, result.stderr
        assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 1
        assert json.loads(result.stdout)["stages"][0]["result"] == "Deleted"

    def test_a_delete_that_never_gets_through_exits_4_after_three_read_back_tries(
        self, stub: IdmStub
    ) -> None:
        stub.drop_next(99, method="DELETE")
        result = idmsync("reset", "--url", stub.url, "--api", "idm7", "--source", LDAP_SOURCE)
        assert result.returncode == 4
        assert len(stub.requests_to(STAGE_PATH, "DELETE")) == 3
        assert "it was not (tried 3 times)" in result.stderr
        assert stub.stage(LDAP_STAGE) is not None


LDAP_PASSWORD = "dj-Zx81-never-print-me"


@pytest.mark.parametrize(
    ("command", "args", "env", "message"),
    [
        ("check", [], {}, "check needs --ldap-url"),
        ("check", ["--ldap-url", "ldap://127.0.0.1:1"], {"LDAP_BIND_PASSWORD": LDAP_PASSWORD},
         "no bind DN"),
        ("check", ["--ldap-url", "ldap://ds.example.com"], {}, "in clear"),
        ("check", ["--ldap-url", "ldaps://169.254.169.254"], {}, "metadata"),
        ("check", ["--ldap-url", "ldap://ds.example.com/dc=example"], {}, "ldap://host[:port]"),
        ("reset", ["--when", "out-of-sync"], {}, "OutOfSync needs a drift check"),
        ("reset", ["--reconcile", "a/b"], {}, "mapping"),
    ],
)  # fmt: skip
def test_bad_drift_or_reconcile_input_exits_2_before_any_request(
    stub: IdmStub, command: str, args: list[str], env: dict[str, str], message: str
) -> None:
    result = idmsync(command, "--url", stub.url, "--source", LDAP_SOURCE, *args, env=env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert LDAP_PASSWORD not in result.stdout + result.stderr
    assert [r for r in stub.requests if r.method != "GET" or "info/version" not in r.path] == []


def test_an_unreachable_directory_exits_4_and_never_shows_the_bind_password(
    stub: IdmStub,
) -> None:
    from tests.harness.net import free_port

    result = idmsync(
        "check", "--url", stub.url, "--source", LDAP_SOURCE, "-v",
        "--ldap-url", f"ldap://127.0.0.1:{free_port()}", "--ldap-bind-dn", "cn=Directory Manager",
        env={"LDAP_BIND_PASSWORD": LDAP_PASSWORD},
    )  # fmt: skip
    assert result.returncode == 4, result.stderr
    assert "ServerUnreachable: directory ldap://127.0.0.1:" in result.stderr
    assert LDAP_PASSWORD not in result.stdout + result.stderr
    assert stub.requests_to(STAGE_PATH, "DELETE") == []
