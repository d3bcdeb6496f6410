"""The fault matrix against the IDM stub: every cell of tests/harness/fault_matrix.py.

The same table runs against a real OpenIDM in tests/e2e/test_fault_matrix_openidm.py (the
cells that involve the server). The table as it ran is printed at the end of the module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.fault_matrix import CELLS, Cell, Row, StubBackend, run_cell, write_table
from tests.stub.idm_stub import IdmStub

ROWS: list[Row] = []


@pytest.fixture(scope="module", autouse=True)
def _print_the_table(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not ROWS:
        return
    with capture.global_and_fixture_disabled():
        write_table(reporter, "fault matrix (backend: stub)", ROWS)


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
async def test_fault_matrix(stub: IdmStub, cell: Cell) -> None:
    row = await run_cell(StubBackend(stub), cell)
    ROWS.append(row)
    assert not row.failures, row.failures
