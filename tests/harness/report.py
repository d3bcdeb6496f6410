"""Tables the long-running tests print for the reader of a CI log, past pytest's capture."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

__all__ = ["table_at_end", "write_lines"]


def write_lines(request: pytest.FixtureRequest, lines: Iterable[str]) -> None:
    """Write ``lines`` to the terminal, uncaptured (nothing when there is no terminal)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


def table_at_end(
    title: str, header: str, rows: list[Any], line: Callable[..., str]
) -> Callable[..., Any]:
    """A module fixture (assign it to a name in the module) that prints ``rows`` as a table
    once the module's tests are done: ``line(*row)`` of a tuple row, ``line(row)`` of another."""

    @pytest.fixture(scope="module", autouse=True)
    def _print_the_table(request: pytest.FixtureRequest) -> Iterator[None]:
        yield
        if rows:
            lines = (line(*row) if isinstance(row, tuple) else line(row) for row in rows)
            write_lines(request, ("", title, header, *lines))

    return _print_the_table
