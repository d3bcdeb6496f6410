"""Operator settings come from one declaration each (controller/settings.py): the variables, the
flags, kopf's settings and the docs' tables all follow it."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import kopf
import pytest

from idmsync.cli import _parser, main
from idmsync.controller.handlers import configure_kopf
from idmsync.controller.settings import (
    OperatorSettings,
    SettingsError,
    settings_specs,
    update_markdown,
)
from tests.unit.test_cli import IDMSYNC

DOCS = Path(__file__).parents[2] / "docs"


def _load(argv: list[str], env: dict[str, str] | None = None) -> OperatorSettings:
    return OperatorSettings.load(env or {}, _parser().parse_args(["run", *argv]))


@pytest.mark.parametrize(
    ("doc", "table"), [("reference.md", "reference"), ("development.md", "development")]
)
def test_the_docs_settings_tables_are_the_declarations(doc: str, table: str) -> None:
    text = (DOCS / doc).read_text(encoding="utf-8")
    assert f"<!-- settings:{table} begin" in text
    assert f"<!-- settings:{table} end -->" in text
    assert update_markdown(text) == text, (
        f"docs/{doc}'s settings table differs from controller/settings.py: run "
        ".venv/bin/python -m idmsync.controller.settings docs/reference.md docs/development.md"
    )
    for spec in settings_specs():
        assert f"`{spec.env}`" in text
        assert f"`{spec.flag}`" in text


def test_every_field_is_a_setting_with_a_variable_and_a_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = {f.name for f in dataclasses.fields(OperatorSettings) if f.init}
    specs = {spec.name: spec for spec in settings_specs()}
    assert set(specs) == names
    # the four that once were neither
    for name in ("retry_backoff_max", "http_attempts", "http_backoff", "watch_timeout"):
        assert specs[name].env == "IDMSYNC_" + name.upper()
        assert specs[name].flag == "--" + name.replace("_", "-")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = capsys.readouterr().out
    for spec in specs.values():
        assert spec.flag in help_text
        assert spec.env in help_text


def test_a_flag_wins_over_its_variable_which_wins_over_the_default() -> None:
    env = {
        "IDMSYNC_RETRY_LIMIT": "3",
        "IDMSYNC_WATCH_TIMEOUT": "60",
        "IDMSYNC_HTTP_BACKOFF": "0.25",
        "IDMSYNC_NAMESPACES": "team-a, team-b,",
        "IDMSYNC_VERBOSE": "true",
    }
    settings = _load(["--retry-limit", "5", "--no-verbose"], env)
    assert settings.retry_limit == 5
    assert settings.verbose is False
    assert settings.watch_timeout == 60
    assert settings.http_backoff == 0.25
    assert settings.namespaces == ("team-a", "team-b")
    defaults = OperatorSettings()
    assert settings.retry_backoff_max == defaults.retry_backoff_max
    assert settings.http_attempts == defaults.http_attempts
    assert _load([]) == defaults
    assert _load(["-v"]).verbose is True


def test_peering_unset_empty_or_named() -> None:
    assert _load([]).peering is None
    assert not _load([]).standalone
    assert _load([], {"IDMSYNC_PEERING": ""}).standalone
    assert _load(["--peering", ""], {"IDMSYNC_PEERING": "idmsync"}).standalone
    assert _load([], {"IDMSYNC_PEERING": "idmsync"}).peering == "idmsync"


@pytest.mark.parametrize(
    ("variable", "value", "why"),
    [
        ("IDMSYNC_RETRY_LIMIT", "many", "not a whole number"),
        ("IDMSYNC_RETRY_LIMIT", "-1", "at least 0"),
        ("IDMSYNC_HTTP_ATTEMPTS", "0", "at least 1"),
        ("IDMSYNC_METRICS_PORT", "70000", "at most 65535"),
        ("IDMSYNC_SHUTDOWN_GRACE", "nan", "not a finite number"),
        ("IDMSYNC_LOG_FORMAT", "xml", "use text or json"),
        ("IDMSYNC_VERBOSE", "perhaps", "use true or false"),
    ],
)
def test_a_value_that_cannot_be_used_is_named(variable: str, value: str, why: str) -> None:
    with pytest.raises(SettingsError) as raised:
        OperatorSettings.load({variable: value})
    assert str(raised.value) == f"{variable}={value!r}: {why}"


def test_idmsync_run_stops_with_status_2_on_a_bad_variable_or_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run"], env={"IDMSYNC_MAX_CONCURRENT_RESETS": "-5"})
    assert exited.value.code == 2
    assert "IDMSYNC_MAX_CONCURRENT_RESETS='-5': at least 0" in capsys.readouterr().err
    result = subprocess.run(
        [IDMSYNC, "run", "--retry-backoff", "soon"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "argument --retry-backoff: 'soon': not a number" in result.stderr


def _kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    theirs = kopf.OperatorSettings()
    configure_kopf(theirs, settings)
    return theirs


def test_kopf_settings_follow_ours() -> None:
    theirs = _kopf_settings(OperatorSettings(watch_timeout=120, max_concurrent_resets=7))
    assert theirs.watching.server_timeout == 120
    assert theirs.watching.client_timeout == 150
    assert theirs.queueing.worker_limit == 7
    assert _kopf_settings(OperatorSettings(max_concurrent_resets=0)).queueing.worker_limit is None
    default = OperatorSettings().max_concurrent_resets
    assert default
    assert _kopf_settings(OperatorSettings()).queueing.worker_limit == default


def test_peering_is_decided_in_one_place() -> None:
    standalone = _kopf_settings(OperatorSettings(peering=""))
    assert standalone.peering.standalone is True
    peered = _kopf_settings(OperatorSettings(peering="idmsync", peering_lifetime=9))
    assert peered.peering.standalone is False
    assert (peered.peering.name, peered.peering.mandatory) == ("idmsync", True)
    assert peered.peering.clusterwide is True
    assert peered.peering.lifetime == 9
    auto = _kopf_settings(OperatorSettings())
    assert auto.peering.standalone is False
    assert auto.peering.mandatory is False


def test_the_reset_handler_keeps_its_kopf_id() -> None:
    """kopf.idmsync.dev/run_reset is on live objects and in users' GitOps ignore rules."""
    handlers = kopf.get_default_registry()._changing.get_all_handlers()
    reset = [h for h in handlers if h.fn.__name__ == "handle_reset"]
    assert len(reset) == 3
    assert {h.id for h in reset} == {"run_reset"}
