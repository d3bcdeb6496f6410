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

import contextlib
from collections.abc import Iterator

import pytest

from tests.harness import openidm as harness


@contextlib.contextmanager
def _running(server: harness.OpenDJ | harness.OpenIDM) -> Iterator[None]:
    """The server started, failing the test with its log's tail if it does not start, and
    stopped whatever happens."""
    try:
        try:
            server.start()
        except harness.HarnessError as e:
            log = server.workdir / server.log_name if server.workdir else None
            text = log.read_text(errors="replace") if log and log.is_file() else ""
            tail = "\n".join(text.splitlines()[-60:])
            pytest.fail(f"{server.name} did not start: {e}\n{tail}", pytrace=False)
        yield
    finally:  # also on a timeout or Ctrl-C: never leave a server behind
        server.stop()


@pytest.fixture(scope="session")
def real_ldap() -> Iterator[harness.OpenDJ]:
    if not (harness.opendj_home() / "setup").is_file():
        pytest.fail(
            f"OpenDJ {harness.OPENDJ_VERSION} is not in the cache {harness.cache_root()}: "
            "run `make idm-dist`",
            pytrace=False,
        )
    dj = harness.OpenDJ()
    with _running(dj):
        yield dj


@pytest.fixture(scope="session")
def real_idm(request: pytest.FixtureRequest) -> Iterator[harness.RealIDM]:
    if harness.cached_openidm() is None:
        pytest.fail(
            f"OpenIDM is not built in {harness.cache_root()}: run `make idm-dist`", pytrace=False
        )
    dj: harness.OpenDJ = request.getfixturevalue("real_ldap")
    idm = harness.OpenIDM(opendj=dj)
    with _running(idm):
        yield harness.RealIDM(opendj=dj, openidm=idm)
