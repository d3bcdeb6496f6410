"""pytest plugin: session-scoped real OpenDJ / OpenIDM (tests/harness/openidm.py).

* ``real_ldap``: a running OpenDJ with the external changelog (``harness.OpenDJ``).
* ``real_idm``: ``harness.RealIDM`` -- OpenIDM on top of the same OpenDJ: ``idm_url``
  (server base without /openidm), ``admin_user``/``admin_password``/``admin_headers``,
  ``ldap_source``, ``csv_source``, ``ldap_url``/``ldap_bind_dn``/``ldap_bind_password``/
  ``ldap_base_dn``, ``ldap_modify()``, ``ldap_replace()``, ``last_change_number()``.

Tests using them carry ``@pytest.mark.openidm``. Neither fixture skips or xfails: a server
that is not built (``make idm-dist``) or does not start FAILS the test, with the reason and the
tail of the server's log.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import openidm as harness


def _log_tail(path: object, name: str, lines: int = 60) -> str:
    try:
        text = (path / name).read_text(errors="replace")  # type: ignore[operator]
    except (OSError, TypeError):
        return ""
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="session")
def real_ldap() -> Iterator[harness.OpenDJ]:
    if not (harness.opendj_home() / "setup").is_file():
        pytest.fail(
            f"OpenDJ {harness.OPENDJ_VERSION} is not in the cache {harness.cache_root()}: "
            "run `make idm-dist`",
            pytrace=False,
        )
    dj = harness.OpenDJ()
    try:
        dj.start()
    except harness.HarnessError as e:
        tail = _log_tail(dj.workdir, "start-ds.out")
        dj.stop()
        pytest.fail(f"OpenDJ did not start: {e}\n{tail}", pytrace=False)
    except BaseException:  # timeout, Ctrl-C: never leave a server behind
        dj.stop()
        raise
    try:
        yield dj
    finally:
        dj.stop()


@pytest.fixture(scope="session")
def real_idm(request: pytest.FixtureRequest) -> Iterator[harness.RealIDM]:
    if harness.cached_openidm() is None:
        pytest.fail(
            f"OpenIDM is not built in {harness.cache_root()}: run `make idm-dist`", pytrace=False
        )
    dj: harness.OpenDJ = request.getfixturevalue("real_ldap")
    idm = harness.OpenIDM(opendj=dj)
    try:
        idm.start()
    except harness.HarnessError as e:
        tail = _log_tail(idm.workdir, "openidm.out")
        idm.stop()
        pytest.fail(f"OpenIDM did not start: {e}\n{tail}", pytrace=False)
    except BaseException:
        idm.stop()
        raise
    try:
        yield harness.RealIDM(opendj=dj, openidm=idm)
    finally:
        idm.stop()
