"""The fault matrix against the IDM stub: every cell of tests/harness/fault_matrix.py.

The same table runs against a real OpenIDM in tests/e2e/test_fault_matrix_openidm.py (the
cells that involve the server). The table as it ran is printed at the end of the module.
"""

from __future__ import annotations

import pytest

from tests.harness.fault_matrix import (
    CELLS,
    TABLE_HEADER,
    Cell,
    Row,
    StubBackend,
    run_cell,
    table_line,
)
from tests.harness.report import table_at_end
from tests.stub.idm_stub import IdmStub

ROWS: list[Row] = []


_print_the_table = table_at_end("fault matrix (backend: stub)", TABLE_HEADER, ROWS, table_line)


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
async def test_fault_matrix(stub: IdmStub, cell: Cell) -> None:
    row = await run_cell(StubBackend(stub), cell)
    ROWS.append(row)
    assert not row.failures, row.failures
