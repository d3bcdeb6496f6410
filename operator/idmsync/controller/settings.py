"""Operator settings, each declared once: an ``OperatorSettings`` field made with :func:`setting`.

From that one declaration come its environment variable (``IDMSYNC_`` and the field's name in
capitals), its ``idmsync run`` flag (``--`` and the name with dashes), how both are parsed (from
the field's type), the ``--help`` text and the settings tables of ``docs/reference.md`` and
``docs/development.md`` (``python -m idmsync.controller.settings docs/*.md`` rewrites them;
``tests/unit/test_settings.py`` fails when they differ). A flag wins over its variable, the
variable over the default.
"""

from __future__ import annotations

import argparse
import re
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from idmsync.engine import RetryPolicy, TargetPolicy

__all__ = [
    "ENV_PREFIX",
    "OperatorSettings",
    "SettingsError",
    "Spec",
    "add_run_arguments",
    "settings_specs",
    "update_markdown",
]

ENV_PREFIX = "IDMSYNC_"
_T = TypeVar("_T")


class SettingsError(ValueError):
    """A variable or flag whose value cannot be used; the message names it."""


@dataclass(frozen=True)
class _Declared:
    help: str  # plain text: --help and the first words of the docs' "meaning"
    details: str = ""  # markdown the docs add after it, from its leading separator on
    shown_default: str | None = None  # markdown; None: the default as it is
    choices: tuple[str, ...] = ()
    short: str | None = None  # a one-letter flag besides the long one
    minimum: float | None = None
    maximum: float | None = None


def setting(
    default: _T,
    help: str,
    *,
    details: str = "",
    shown_default: str | None = None,
    choices: tuple[str, ...] = (),
    short: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> _T:
    """Declare an operator setting: its default and what it means, once."""
    declared = _Declared(help, details, shown_default, choices, short, minimum, maximum)
    return field(default=default, metadata={"setting": declared})


@dataclass(frozen=True)
class OperatorSettings:
    namespaces: tuple[str, ...] = setting(
        (),
        "comma-separated namespaces to watch (glob patterns allowed)",
        details=". With patterns, kopf discovers matching namespaces by watching them; in our "
        "tests a namespace created during the operator's start-up was once never picked up "
        "until a restart. Name namespaces exactly, or watch all, where that matters.",
        shown_default="all",
    )
    allowed_targets: str = setting(
        "",
        "host patterns url and tenant targets may name",
        details=" (`host`, `host:port`, `*.domain`, optional `http://`/`https://` prefix); "
        "without a prefix, https only",
        shown_default="none",
    )
    metrics_port: int = setting(
        8080,
        "port of the Prometheus metrics (0: none)",
        details=": `idmsync_resets_total{result,reason}`, `idmsync_reset_duration_seconds`, "
        "`idmsync_resets_in_flight`; where a check is configured, "
        "`idmsync_stage_lag_changes{namespace,name,stage}` (changes between the token and the "
        "directory's last change; negative: Ahead) and "
        "`idmsync_stage_drift{namespace,name,stage,state}` (1 for the state found). Alert on "
        '`idmsync_stage_drift{state=~"Ahead|Trimmed"} == 1`, or on a lag that keeps growing',
        minimum=0,
        maximum=65535,
    )
    health_port: int = setting(
        8081,
        "port of /healthz, liveness and readiness (0: none)",
        minimum=0,
        maximum=65535,
    )
    log_format: str = setting("text", "log format: text or json", choices=("text", "json"))
    verbose: bool = setting(False, "log at debug level, kopf's messages too", short="-v")
    retry_limit: int = setting(
        8, "retries of a reset on a transient failure before it fails", minimum=0
    )
    retry_backoff: float = setting(
        5.0, "first delay in seconds before a reset is retried, doubled per retry", minimum=0
    )
    retry_backoff_max: float = setting(
        300.0, "longest delay in seconds between retries of a reset", minimum=0
    )
    http_attempts: int = setting(
        RetryPolicy.attempts,
        "tries of one request to IDM on a transient error, the first included",
        minimum=1,
    )
    http_backoff: float = setting(
        RetryPolicy.base_delay,
        "first delay in seconds before a request to IDM is tried again, doubled per try "
        f"(jittered, at most {RetryPolicy.max_delay:g} s)",
        minimum=0,
    )
    max_requests_per_server: int = setting(
        4, "concurrent HTTP requests to one IDM server, across all resources", minimum=1
    )
    max_concurrent_resets: int = setting(
        50,
        "SyncTokenResets handled at once (kopf's worker limit); the others wait their turn; "
        "0: no limit",
        details=". Bounds memory: a thousand at once held 300 MB ([benchmarks](benchmarks.md))",
        minimum=0,
    )
    service_url_template: str = setting(
        "{scheme}://{name}.{namespace}.svc:{port}",
        "how a Service target becomes a URL",
        details=" (change only to run the operator outside a cluster)",
    )
    peering: str | None = setting(
        None,
        'name of the ClusterKopfPeering the replicas meet in (created if missing); "" runs '
        "standalone",
        details=". The replica of highest priority works, the others stand by",
        shown_default="unset: kopf auto-detects; the Deployment and chart set `idmsync`",
    )
    peering_lifetime: int = setting(
        60,
        "seconds a replica counts as alive to its peers without a keep-alive",
        details=": how long the standby waits before taking over from a replica that died "
        "(SIGKILL, node lost)",
        minimum=1,
    )
    shutdown_grace: float = setting(
        20.0,
        "on SIGTERM, seconds the resets in progress may take to finish before they are "
        "cancelled at their current step",
        details="; the replica leaves the peering only after. Keep it below the pod's "
        "`terminationGracePeriodSeconds` (30)",
        minimum=0,
    )
    watch_timeout: int = setting(
        300,
        "seconds a watch of the API server may last before it is re-established",
        details=" (kopf's server timeout; the client waits 30 s longer): a watch that went "
        "silent is not trusted forever",
        minimum=1,
    )
    policy: TargetPolicy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        policy = TargetPolicy.from_patterns(self.allowed_targets, allow_loopback=False)
        object.__setattr__(self, "policy", policy)

    @property
    def standalone(self) -> bool:
        """Whether this replica runs without peers (``--peering ""``)."""
        return self.peering == ""

    def service_url(self, *, scheme: str, name: str, namespace: str, port: int) -> str:
        return self.service_url_template.format(
            scheme=scheme, name=name, namespace=namespace, port=port
        )

    @classmethod
    def load(
        cls, env: Mapping[str, str], flags: argparse.Namespace | None = None
    ) -> OperatorSettings:
        """The defaults, overridden by ``IDMSYNC_*`` variables, overridden by flags given
        (those of :func:`add_run_arguments`, already parsed). Raises :class:`SettingsError`."""
        given = vars(flags) if flags is not None else {}
        values: dict[str, Any] = {}
        for spec in settings_specs():
            if spec.name in given:
                values[spec.name] = given[spec.name]
            elif spec.env in env:
                try:
                    values[spec.name] = spec.parse(env[spec.env])
                except ValueError as exc:
                    raise SettingsError(f"{spec.env}={env[spec.env]!r}: {exc}") from None
        return cls(**values)


@dataclass(frozen=True)
class Spec:
    """One setting as its declaration makes it: names, parser, texts."""

    name: str
    type: Any
    default: Any
    declared: _Declared

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def flags(self) -> tuple[str, ...]:
        return (self.declared.short, self.flag) if self.declared.short else (self.flag,)

    @property
    def kind(self) -> str:
        """The value a variable takes, in words (the docs' "type")."""
        if self.declared.choices:
            return " or ".join(self.declared.choices)
        kind, low, high = _KINDS[self.type][0], self.declared.minimum, self.declared.maximum
        if low is not None and high is not None:
            return f"{kind}, {low:g} to {high:g}"
        if low is not None:
            return f"{kind}, at least {low:g}"
        return kind

    def parse(self, text: str) -> Any:
        """A variable's or flag's text as the setting's value; ``ValueError`` says why not."""
        value = _KINDS[self.type][1](text)
        choices, low, high = self.declared.choices, self.declared.minimum, self.declared.maximum
        if choices and value not in choices:
            raise ValueError(f"use {' or '.join(choices)}")
        if low is not None and value < low:
            raise ValueError(f"at least {low:g}")
        if high is not None and value > high:
            raise ValueError(f"at most {high:g}")
        return value

    def shown_default(self, *, markdown: bool) -> str:
        shown = self.declared.shown_default
        if shown is None:
            shown = _show(self.default)
            shown = f"`{shown}`" if "{" in shown else shown
        return shown if markdown else shown.replace("`", "")

    def meaning(self) -> str:
        """The docs' text: the help, then the details."""
        return self.declared.help + self.declared.details


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("use true or false")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("not a whole number") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return value


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


#: a field's type → how the docs name it, and how its text is read
_KINDS: dict[Any, tuple[str, Callable[[str], Any]]] = {
    str: ("text", str),
    str | None: ("text", str),
    int: ("integer", _integer),
    float: ("number", _number),
    bool: ("true or false", _boolean),
    tuple[str, ...]: ("comma-separated list", _names),
}


def settings_specs() -> tuple[Spec, ...]:
    """Every setting, in declaration order."""
    return _SPECS


def _specs() -> tuple[Spec, ...]:
    hints = typing.get_type_hints(OperatorSettings)
    specs = []
    for f in fields(OperatorSettings):
        declared = f.metadata.get("setting")
        if declared is None:
            continue
        if hints[f.name] not in _KINDS:
            raise TypeError(f"setting {f.name}: no parser for {hints[f.name]}")
        specs.append(Spec(f.name, hints[f.name], f.default, declared))
    return tuple(specs)


_SPECS = _specs()


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``idmsync run`` flag per setting. A flag not given leaves no attribute: then
    :meth:`OperatorSettings.load` takes the variable, or the default."""
    parser.epilog = (
        f"Each flag can be given as an environment variable instead ({ENV_PREFIX}<FLAG>, "
        "e.g. IDMSYNC_RETRY_LIMIT); a flag wins over its variable. docs/reference.md "
        '"Operator settings" describes them.'
    )
    for spec in settings_specs():
        help_text = (
            f"{spec.declared.help} ({spec.env}; default "
            f"{spec.shown_default(markdown=False)})".replace("%", "%%")
        )
        if spec.type is bool:
            parser.add_argument(
                *spec.flags,
                dest=spec.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
            continue
        parser.add_argument(
            *spec.flags,
            dest=spec.name,
            type=_flag_parser(spec),
            default=argparse.SUPPRESS,
            metavar=spec.name.upper(),
            help=help_text,
        )


def _flag_parser(spec: Spec) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return spec.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None

    return parse


# -- the docs' tables ------------------------------------------------------------------------

_BLOCK = re.compile(
    r"(<!-- settings:(?P<table>[a-z]+) begin[^>]*-->\n)"
    r"(?P<body>.*?)"
    r"(<!-- settings:(?P=table) end -->)",
    re.DOTALL,
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _flags(spec: Spec) -> str:
    return ", ".join(f"`{f}`" for f in spec.flags)


def _reference_table() -> str:
    rows = ["| variable | flag | default | meaning |", "|---|---|---|---|"]
    for spec in settings_specs():
        rows.append(
            f"| `{spec.env}` | {_flags(spec)} | {_cell(spec.shown_default(markdown=True))} | "
            f"{_cell(spec.meaning())} |"
        )
    return "\n".join(rows) + "\n"


def _development_table() -> str:
    rows = ["| field | variable | flag | value | default |", "|---|---|---|---|---|"]
    for spec in settings_specs():
        rows.append(
            f"| `{spec.name}` | `{spec.env}` | {_flags(spec)} | {_cell(spec.kind)} | "
            f"{_cell(spec.shown_default(markdown=True))} |"
        )
    return "\n".join(rows) + "\n"


_TABLES: dict[str, Callable[[], str]] = {
    "reference": _reference_table,
    "development": _development_table,
}


def update_markdown(text: str) -> str:
    """``text`` with every generated settings table (between ``<!-- settings:<table> begin``
    and ``<!-- settings:<table> end -->``) as the declarations make it now."""

    def replace(match: re.Match[str]) -> str:
        table = match.group("table")
        if table not in _TABLES:
            raise ValueError(f"unknown settings table {table!r}")
        return match.group(1) + _TABLES[table]() + match.group(4)

    return _BLOCK.sub(replace, text)


def main(paths: Sequence[str]) -> int:
    """Rewrite the settings tables in the markdown files named."""
    for name in paths:
        path = Path(name)
        text = path.read_text(encoding="utf-8")
        updated = update_markdown(text)
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            print(f"updated {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
