"""`make demo` keeps working: the KB story on real OpenDJ + OpenIDM, told with real numbers."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.harness.demo import ROOT

pytestmark = [pytest.mark.openidm, pytest.mark.timeout(900)]


def test_make_demo_tells_the_kb_story_with_real_numbers() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.harness.demo", "--idm", "real"],
        cwd=ROOT, capture_output=True, text=True, timeout=840, check=False,
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 0, out[-4000:] + run.stderr[-4000:]

    def numbers(after: str) -> tuple[int, int]:
        section = out[out.index(after) :]
        m = re.search(r"stored token (\d+), directory lastChangeNumber (\d+)", section)
        assert m, section[:2000]
        return int(m.group(1)), int(m.group(2))

    token, last = numbers("== 1. liveSync works")
    assert token == last > 0, "liveSync has run: the stage is at the directory's latest change"
    token, last = numbers("== 2. the directory is")
    assert token > last, "after the 'restore' the stored token is ahead"
    assert "bjensen's phone in IDM: +1 408 555 0001" in out[out.index("== 3.") :], "stuck"
    assert "condition met" in out
    assert '"result": "Deleted"' in out
    token, last = numbers("== 5. after the reset")
    assert token == last, "the reset put the stage back at the directory's latest change"
    assert "scarter's phone in IDM: +1 555 0200" in out, "changes flow again"
    assert "openidm-admin" not in out.replace("IDM_USERNAME", ""), "no credential is printed"
