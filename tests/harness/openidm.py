"""Real-IDM test harness: OpenDJ (LDAP + external changelog) and OpenIDM on loopback.

Both come from Maven Central only and are cached under ``${IDMSYNC_CACHE:-~/.cache/idmsync}``:

* ``opendj-<v>/``: the OpenDJ zip (``mvn dependency:copy``), its unpacked tree and ``dist.json``;
* ``openidm-6.1.0-<hash>/openidm``: OpenIDM 6.1.0 built from its runtime jars with our own POM,
  launcher configuration, ``conf/`` and scripts (``tests/harness/openidm_dist.py``,
  ``tools/openidm/``). Central serves no OpenIDM distribution zip, so we assemble one.

``IDMSYNC_OPENIDM_HOME=/path/to/openidm`` names an unpacked stock OpenIDM to use instead (a 7.x
one, say; the harness never downloads outside the registry).

Every run copies the pristine trees into fresh temp dirs, so runs are independent.
All servers listen on 127.0.0.1 (exception: OpenDJ's replication port, see below).

CLI::

    python -m tests.harness.openidm resolve        # what `make idm-dist` runs
    python -m tests.harness.openidm [run]          # foreground; prints IDM_URL=... lines
    python -m tests.harness.openidm run --opendj-only
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from tests.harness import openidm_dist, processes
from tests.harness.net import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "tests" / "e2e" / "idm"

OPENDJ_GROUP = "org.openidentityplatform.opendj"
OPENDJ_ARTIFACT = "opendj-server-legacy"
# 4.6.4, not newer: in 4.8.2, 4.9.4, 4.10.1 and 5.0.3 a search of cn=changelog with
# derefAliases=always|find (JNDI's default, so the LDAP connector's liveSync) fails with result 80
# "RuntimeException(Not implemented)"; tests/e2e/test_openidm_facts.py pins this.
OPENDJ_VERSION = os.environ.get("IDMSYNC_OPENDJ_VERSION", "4.6.4")

LOOPBACK = "127.0.0.1"
LDAP_BASE_DN = "dc=example,dc=com"
LDAP_BIND_DN = "cn=Directory Manager"
LDAP_BIND_PASSWORD = "idmsync-dj-admin"  # throwaway test directory
IDM_ADMIN_USER = "openidm-admin"
IDM_ADMIN_PASSWORD = "openidm-admin"  # OpenIDM's shipped default
LDAP_SOURCE = "system/ldap/account"
CSV_SOURCE = "system/hr/account"

# The LDAP connector uses JNDI internals (module java.naming) on Java 17.
JAVA17_LDAP_EXPORTS = "--add-exports=java.naming/com.sun.jndi.ldap=ALL-UNNAMED"


class DistUnavailableError(RuntimeError):
    """A distribution cannot be obtained from the package registry (exact error inside)."""


class HarnessError(RuntimeError):
    """A server failed to set up, start or answer in time."""


def log(msg: str) -> None:
    print(f"[idm-harness {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- cache


def cache_root() -> Path:
    return Path(os.environ.get("IDMSYNC_CACHE") or Path.home() / ".cache" / "idmsync")


def opendj_home(version: str = OPENDJ_VERSION) -> Path:
    return cache_root() / f"opendj-{version}" / "opendj"


def local_openidm() -> tuple[str, Path] | None:
    """A developer-supplied unpacked install named by IDMSYNC_OPENIDM_HOME (not from Maven)."""
    env = os.environ.get("IDMSYNC_OPENIDM_HOME")
    if not env:
        return None
    home = Path(env)
    if not (home / "startup.sh").is_file():
        raise DistUnavailableError(f"IDMSYNC_OPENIDM_HOME={home} has no startup.sh")
    cores = sorted((home / "bundle").glob("*openidm-core-*.jar"))
    m = re.search(r"openidm-core-(.+)\.jar$", cores[0].name) if cores else None
    return (m.group(1) if m else "unknown"), home


def cached_openidm() -> tuple[str, Path] | None:
    """(version, pristine install dir): IDMSYNC_OPENIDM_HOME, else the one we built."""
    local = local_openidm()
    if local:
        return local
    home = openidm_dist.built_home()
    return (openidm_dist.VERSION, home) if home is not None else None


def _mvn_copy(group: str, artifact: str, version: str, ext: str, out_dir: Path) -> Path:
    """`mvn dependency:copy` one artifact into out_dir; DistUnavailableError with Maven's error."""
    out_dir.mkdir(parents=True, exist_ok=True)
    coords = f"{group}:{artifact}:{version}:{ext}"
    cmd = [
        "mvn",
        "-B",
        "-U",
        "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy",
        f"-Dartifact={coords}",
        f"-DoutputDirectory={out_dir}",
        "-Dmdep.overWriteReleases=true",
    ]
    log(f"resolving {coords} with Maven")
    proc = subprocess.run(
        cmd, capture_output=True, text=True, check=False, cwd=tempfile.gettempdir()
    )
    target = out_dir / f"{artifact}-{version}.{ext}"
    if proc.returncode != 0 or not target.is_file():
        errors = [
            ln
            for ln in proc.stdout.splitlines()
            if ln.startswith("[ERROR]") and ln.strip() != "[ERROR]"
        ]
        raise DistUnavailableError(errors[0] if errors else f"mvn exited {proc.returncode}")
    return target


def _unpack(zip_path: Path, dest_parent: Path, top: str) -> Path:
    """Unzip atomically: extract into a sibling temp dir, then rename its `top` dir into place."""
    final = dest_parent / top
    if final.exists():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest_parent))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                extracted = Path(zf.extract(info, tmp))
                mode = (info.external_attr >> 16) & 0o777
                if mode and not info.is_dir():
                    extracted.chmod(mode)
        (tmp / top).rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _write_dist_json(d: Path, coords: str, zip_path: Path) -> None:
    h = hashlib.sha256()
    with zip_path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    info = {
        "artifact": coords,
        "zip": zip_path.name,
        "bytes": zip_path.stat().st_size,
        "sha256": h.hexdigest(),
    }
    (d / "dist.json").write_text(json.dumps(info, indent=2) + "\n")


def resolve_opendj(version: str = OPENDJ_VERSION) -> Path:
    d = cache_root() / f"opendj-{version}"
    home = d / "opendj"
    if (home / "setup").is_file():
        return home
    zip_path = _mvn_copy(OPENDJ_GROUP, OPENDJ_ARTIFACT, version, "zip", d)
    _unpack(zip_path, d, "opendj")
    _write_dist_json(d, f"{OPENDJ_GROUP}:{OPENDJ_ARTIFACT}:{version}:zip", zip_path)
    log(f"OpenDJ {version}: {zip_path.stat().st_size} bytes, unpacked in {home}")
    return home


def resolve_openidm() -> tuple[str, Path]:
    """IDMSYNC_OPENIDM_HOME, else OpenIDM 6.1.0 built from Central (DistBuildError if it fails)."""
    return cached_openidm() or (openidm_dist.VERSION, openidm_dist.build())


# --------------------------------------------------------------------------- processes


def _port_open(port: int) -> bool:
    try:
        socket.create_connection((LOOPBACK, port), timeout=2).close()
    except OSError:
        return False
    return True


def _run(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    input_text: str | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(cmd),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        input=input_text,
        cwd=cwd,
    )
    if proc.returncode != 0:
        raise HarnessError(
            f"{' '.join(cmd[:2])} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


# --------------------------------------------------------------------------- servers


@dataclass
class _Server:
    """A Java server run from its own copy of the pristine tree, in a temp dir of its own."""

    name: ClassVar[str]
    log_name: ClassVar[str]
    stop_timeout: ClassVar[float] = 30
    workdir: Path | None = field(default=None, kw_only=True)
    startup_seconds: float = field(default=0.0, kw_only=True)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, kw_only=True)

    def _spawn(
        self, argv: Sequence[str], *, cwd: Path, env: dict[str, str], append: bool = False
    ) -> None:
        """In its own process group, ended (and the temp dir removed) if the harness dies."""
        assert self.workdir is not None
        log_path = self.workdir / self.log_name
        self.proc = processes.spawn(
            argv, log_path, cwd=cwd, env=env, append=append, reap=self.workdir
        )
        if not any(server is self for server in _ALIVE):
            _ALIVE.append(self)

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise HarnessError(
                f"{self.name} exited {self.proc.returncode}; see {self.workdir}/{self.log_name}"
            )

    def _ready(self, started: float, where: str) -> None:
        assert self.proc is not None
        self.startup_seconds = time.monotonic() - started
        rss = processes.rss_kib(self.proc.pid, descendants=True) // 1024
        log(f"{self.name} ready at {where} in {self.startup_seconds:.1f}s (rss {rss} MiB)")

    def stop(self) -> None:
        if self.proc is not None:
            processes.stop(self.proc, timeout=self.stop_timeout)
            self.proc = None
        if self.workdir is not None and not os.environ.get("IDMSYNC_KEEP_TMP"):
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        with contextlib.suppress(ValueError):
            _ALIVE.remove(self)


# --------------------------------------------------------------------------- OpenDJ


@dataclass
class OpenDJ(_Server):
    """One OpenDJ directory server with the external changelog (cn=changelog) enabled."""

    name: ClassVar[str] = "OpenDJ"
    log_name: ClassVar[str] = "start-ds.out"

    version: str = OPENDJ_VERSION
    base_dn: str = LDAP_BASE_DN
    bind_dn: str = LDAP_BIND_DN
    bind_password: str = LDAP_BIND_PASSWORD
    ldap_port: int = 0
    admin_port: int = 0
    replication_port: int = 0

    @property
    def home(self) -> Path:
        assert self.workdir is not None, "OpenDJ not started"
        return self.workdir / "opendj"

    @property
    def ldap_url(self) -> str:
        return f"ldap://{LOOPBACK}:{self.ldap_port}"

    def _tool_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("OPENDJ_JAVA_ARGS", None)
        return env

    def _bin(self, tool: str) -> str:
        return str(self.home / "bin" / tool)

    def _ldap_args(self) -> list[str]:
        return [
            "-h",
            LOOPBACK,
            "-p",
            str(self.ldap_port),
            "-D",
            self.bind_dn,
            "-w",
            self.bind_password,
        ]

    def _admin_args(self) -> list[str]:
        return [
            "-h",
            LOOPBACK,
            "-p",
            str(self.admin_port),
            "-D",
            self.bind_dn,
            "-w",
            self.bind_password,
            "--trustAll",
            "--no-prompt",
        ]

    def start(self) -> None:
        pristine = opendj_home(self.version)
        if not (pristine / "setup").is_file():
            raise DistUnavailableError(
                f"OpenDJ {self.version} is not in the cache ({pristine}): run `make idm-dist`"
            )
        t0 = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="idmsync-opendj-"))
        shutil.copytree(pristine, self.home, symlinks=True)
        self.ldap_port, self.admin_port, self.replication_port = (
            free_port(),
            free_port(),
            free_port(),
        )
        pw_file = self.workdir / "root-password"
        pw_file.write_text(self.bind_password)
        pw_file.chmod(0o600)
        _run(
            [
                str(self.home / "setup"),
                "--cli",
                "--no-prompt",
                "--acceptLicense",
                "--doNotStart",
                "--hostname",
                LOOPBACK,
                "--ldapPort",
                str(self.ldap_port),
                "--adminConnectorPort",
                str(self.admin_port),
                "--rootUserDN",
                self.bind_dn,
                "--rootUserPasswordFile",
                str(pw_file),
                "--baseDN",
                self.base_dn,
                "--ldifFile",
                str(CONFIG_DIR / "opendj" / "users.ldif"),
            ],
            env=self._tool_env(),
            timeout=600,
            cwd=self.workdir,
        )
        # Every connection handler and the administration connector: loopback only.
        cfg = self.home / "config" / "config.ldif"
        cfg.write_text(
            cfg.read_text().replace(
                "ds-cfg-listen-address: 0.0.0.0", f"ds-cfg-listen-address: {LOOPBACK}"
            )
        )
        self._launch()
        self._wait_ldap(timeout=300)
        # External changelog: a replication server + a replication domain for the base DN on this
        # one server. (The replication server binds its port on all interfaces: OpenDJ has no
        # listen-address for it; the port is random and speaks only the TLS replication protocol.)
        provider = ["--provider-name", "Multimaster Synchronization"]
        _run(
            [
                self._bin("dsconfig"),
                "create-replication-server",
                *self._admin_args(),
                *provider,
                "--set",
                f"replication-port:{self.replication_port}",
                "--set",
                "replication-server-id:1",
                "--set",
                f"replication-server:{LOOPBACK}:{self.replication_port}",
            ],
            env=self._tool_env(),
        )
        _run(
            [
                self._bin("dsconfig"),
                "create-replication-domain",
                *self._admin_args(),
                *provider,
                "--domain-name",
                self.base_dn,
                "--set",
                f"base-dn:{self.base_dn}",
                "--set",
                f"replication-server:{LOOPBACK}:{self.replication_port}",
                "--set",
                "server-id:2",
            ],
            env=self._tool_env(),
        )
        deadline = time.monotonic() + 120
        while "lastChangeNumber" not in self.root_dse():
            if time.monotonic() > deadline:
                raise HarnessError("OpenDJ: root DSE never published lastChangeNumber")
            time.sleep(1)
        self._ready(t0, f"{self.ldap_url} (OpenDJ {self.version})")

    def _launch(self) -> None:
        """start-ds in the foreground of its own process group."""
        assert self.workdir is not None
        env = self._tool_env()
        env["OPENDJ_JAVA_ARGS"] = "-server -Xms64m -Xmx512m"
        self._spawn([self._bin("start-ds"), "--nodetach"], cwd=self.workdir, env=env, append=True)

    def rebuild_changelog(self) -> None:
        """What restoring the directory, or rebuilding its changelog, does to change numbers.

        Stop the server, delete the changelog database (``changelogDb/``), start it again:
        OpenDJ 4.6.4 then numbers changes from 1 again (the root DSE shows first/last 0 until
        the next change), while a sync token stored before is as high as it was.
        """
        assert self.proc is not None, "OpenDJ not started"
        _run([self._bin("stop-ds")], env=self._tool_env(), timeout=120)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=60)
        processes.stop(self.proc, timeout=30)
        changelog = self.home / "changelogDb"
        shutil.rmtree(changelog)
        changelog.mkdir()
        self._launch()
        self._wait_ldap(timeout=300)
        deadline = time.monotonic() + 120
        while "lastChangeNumber" not in self.root_dse():
            if time.monotonic() > deadline:
                raise HarnessError("OpenDJ: no lastChangeNumber after the changelog rebuild")
            time.sleep(1)

    def set_purge_delay(self, delay: str) -> None:
        """The replication server's changelog purge delay, e.g. ``1 s`` (default ``3 d``)."""
        _run(
            [
                self._bin("dsconfig"),
                "set-replication-server-prop",
                *self._admin_args(),
                "--provider-name",
                "Multimaster Synchronization",
                "--set",
                f"replication-purge-delay:{delay}",
            ],
            env=self._tool_env(),
        )

    def _wait_ldap(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            if _port_open(self.ldap_port):
                with contextlib.suppress(HarnessError):
                    self.root_dse()
                    return
            if time.monotonic() > deadline:
                raise HarnessError(f"OpenDJ did not answer on {self.ldap_url} within {timeout}s")
            time.sleep(1)

    # ---- LDAP helpers (OpenDJ's own CLI tools; no Python LDAP library needed)

    def search(
        self,
        base: str,
        filt: str = "(objectClass=*)",
        scope: str = "sub",
        attrs: Sequence[str] = (),
        deref: str = "never",
    ) -> list[dict[str, list[str]]]:
        """ldapsearch; returns entries as {attr: [values]} with 'dn' as a one-value list."""
        args = ["-b", base, "-s", scope, "-a", deref, filt, *attrs]
        out = _run(
            [self._bin("ldapsearch"), *self._ldap_args(), *args],
            env=self._tool_env(),
            timeout=120,
        ).stdout
        return parse_ldif(out)

    def root_dse(self) -> dict[str, list[str]]:
        entries = self.search("", scope="base", attrs=["+", "*"])
        return entries[0] if entries else {}

    def last_change_number(self) -> int:
        return int(self.root_dse()["lastChangeNumber"][0])

    def first_change_number(self) -> int:
        return int(self.root_dse()["firstChangeNumber"][0])

    def modify(self, ldif: str) -> None:
        """Apply an LDIF change record (changetype: modify/add/delete) with ldapmodify."""
        _run(
            [self._bin("ldapmodify"), *self._ldap_args()],
            env=self._tool_env(),
            input_text=ldif,
            timeout=120,
        )

    def replace_attr(self, dn: str, attr: str, value: str) -> int:
        """Replace one attribute value; returns the change number it got.

        The external changelog is written asynchronously: lastChangeNumber can lag the
        modify for a moment, so wait until it moves past the number read before.
        """
        before = self.last_change_number()
        self.modify(f"dn: {dn}\nchangetype: modify\nreplace: {attr}\n{attr}: {value}\n")
        deadline = time.monotonic() + 30
        while (now := self.last_change_number()) <= before:
            if time.monotonic() > deadline:
                raise HarnessError(f"the changelog did not record the change to {dn}")
            time.sleep(0.1)
        return now


def parse_ldif(text: str) -> list[dict[str, list[str]]]:
    """Tiny LDIF reader for ldapsearch output (folded lines, base64 values)."""
    import base64

    entries: list[dict[str, list[str]]] = []
    lines: list[str] = []
    for raw in text.splitlines():
        if raw.startswith(" ") and lines:
            lines[-1] += raw[1:]
        else:
            lines.append(raw)
    cur: dict[str, list[str]] | None = None
    for line in [*lines, ""]:
        if not line.strip():
            if cur:
                entries.append(cur)
            cur = None
            continue
        if line.startswith("#") or ":" not in line:
            continue
        name, _, value = line.partition(":")
        if value.startswith(":"):
            value = base64.b64decode(value[1:].strip()).decode("utf-8", "replace")
        else:
            value = value.strip()
        cur = cur if cur is not None else {}
        cur.setdefault(name, []).append(value)
    return entries


# --------------------------------------------------------------------------- OpenIDM


@dataclass
class OpenIDM(_Server):
    """OpenIDM with our conf (tests/e2e/idm/openidm/conf) overlaid, pointed at an OpenDJ."""

    name: ClassVar[str] = "OpenIDM"
    log_name: ClassVar[str] = "openidm.out"
    stop_timeout: ClassVar[float] = 60
    opendj: OpenDJ
    version: str = ""
    http_port: int = 0

    @property
    def home(self) -> Path:
        assert self.workdir is not None, "OpenIDM not started"
        return self.workdir / "openidm"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    def start(self, ready_timeout: float = 600) -> None:
        found = cached_openidm()
        if found is None:
            raise DistUnavailableError(
                f"OpenIDM {openidm_dist.VERSION} is not built in {cache_root()}: "
                "run `make idm-dist`"
            )
        self.version, pristine = found
        t0 = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="idmsync-openidm-"))
        shutil.copytree(pristine, self.home, symlinks=True)
        self.http_port = free_port()
        https_port, mutual_port = free_port(), free_port()
        subst = {
            "@@LDAP_HOST@@": LOOPBACK,
            "@@LDAP_PORT@@": str(self.opendj.ldap_port),
            "@@LDAP_BIND_DN@@": self.opendj.bind_dn,
            "@@LDAP_BIND_PASSWORD@@": self.opendj.bind_password,
            "@@LDAP_BASE_DN@@": self.opendj.base_dn,
        }
        for src_dir, dst_dir in (
            (CONFIG_DIR / "openidm" / "conf", self.home / "conf"),
            (CONFIG_DIR / "openidm" / "data", self.home / "data"),
        ):
            dst_dir.mkdir(parents=True, exist_ok=True)
            for src in sorted(src_dir.iterdir()):
                text = src.read_text()
                for k, v in subst.items():
                    text = text.replace(k, json.dumps(v)[1:-1] if src.suffix == ".json" else v)
                (dst_dir / src.name).write_text(text)
        self._loopback_only()
        boot = self.home / "conf" / "boot" / "boot.properties"
        props = boot.read_text()
        for key, value in (
            ("openidm.port.http", self.http_port),
            ("openidm.port.https", https_port),
            ("openidm.port.mutualauth", mutual_port),
            ("openidm.auth.clientauthonlyports", mutual_port),
            ("openidm.host", LOOPBACK),
        ):
            line = f"{key}={value}"
            props, n = re.subn(rf"(?m)^{re.escape(key)}=.*$", line, props)
            if n == 0:
                props += f"\n{line}\n"
        boot.write_text(props)
        env = dict(os.environ)
        env["OPENIDM_OPTS"] = f"-Xmx1024m -Xms256m {JAVA17_LDAP_EXPORTS} -Dopenidm.host={LOOPBACK}"
        # startup.sh reads the console: spawn gives it none, so it never blocks on input
        self._spawn(["./startup.sh"], cwd=self.home, env=env)
        self._wait_ready(ready_timeout)
        self._ready(t0, f"{self.url} (OpenIDM {self.version})")

    def _loopback_only(self) -> None:
        """Jetty on 127.0.0.1 only. Our build's jetty.xml already says so and names its connector
        "127.0.0.1:@@HTTP_PORT@@" (pax-web adopts a connector only by that name). A stock install
        (IDMSYNC_OPENIDM_HOME) gets the same by rewriting: host on the connector, pax-web's
        listening address, and OrientDB's embedded network server (ports 2424 on all interfaces
        and 2480) off -- the repository itself is opened in-process (plocal)."""
        jetty = self.home / "conf" / "jetty.xml"
        text = jetty.read_text() if jetty.is_file() else ""
        if "@@HTTP_PORT@@" in text:
            jetty.write_text(text.replace("@@HTTP_PORT@@", str(self.http_port)))
            return
        if text:
            text, n = re.subn(
                r'(?m)^(\s*)<Set name="port">', rf'\1<Set name="host">{LOOPBACK}</Set>\n\g<0>', text
            )
            text = text.replace('<Property name="jetty.host" default="0.0.0.0" />', LOOPBACK)
            jetty.write_text(text)
            if n == 0:
                log("warning: conf/jetty.xml has no connector port to pin to loopback")
        props = self.home / "conf" / "config.properties"
        if props.is_file():
            with props.open("a") as f:
                f.write(f"\norg.ops4j.pax.web.listening.addresses={LOOPBACK}\n")
        repo = self.home / "conf" / "repo.orientdb.json"
        if repo.is_file():
            cfg = json.loads(repo.read_text())
            if isinstance(cfg.get("embeddedServer"), dict):
                cfg["embeddedServer"]["enabled"] = False
                repo.write_text(json.dumps(cfg, indent=4) + "\n")

    def _wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        last = ""
        headers = {"X-OpenIDM-Username": IDM_ADMIN_USER, "X-OpenIDM-Password": IDM_ADMIN_PASSWORD}
        while True:
            self._check_alive()
            try:
                r = httpx.get(f"{self.url}/openidm/info/ping", headers=headers, timeout=5)
                last = f"{r.status_code} {r.text[:200]}"
                if r.status_code == 200 and r.json().get("state") == "ACTIVE_READY":
                    return
            except (httpx.HTTPError, ValueError) as e:
                last = repr(e)
            if time.monotonic() > deadline:
                raise HarnessError(f"OpenIDM not ACTIVE_READY within {timeout}s (last: {last})")
            time.sleep(2)


# --------------------------------------------------------------------------- the pair


@dataclass
class RealIDM:
    """What tests get: a running OpenDJ and (unless opendj_only) a running OpenIDM."""

    opendj: OpenDJ
    openidm: OpenIDM | None = None
    admin_user: str = IDM_ADMIN_USER
    admin_password: str = IDM_ADMIN_PASSWORD
    ldap_source: str = LDAP_SOURCE
    csv_source: str = CSV_SOURCE

    @property
    def idm_url(self) -> str:
        """Server base WITHOUT /openidm, e.g. http://127.0.0.1:41234."""
        if self.openidm is None:
            raise HarnessError("OpenIDM is not running (opendj-only harness)")
        return self.openidm.url

    @property
    def openidm_version(self) -> str:
        return self.openidm.version if self.openidm else ""

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"X-OpenIDM-Username": self.admin_user, "X-OpenIDM-Password": self.admin_password}

    @property
    def ldap_url(self) -> str:
        return self.opendj.ldap_url

    @property
    def ldap_bind_dn(self) -> str:
        return self.opendj.bind_dn

    @property
    def ldap_bind_password(self) -> str:
        return self.opendj.bind_password

    @property
    def ldap_base_dn(self) -> str:
        return self.opendj.base_dn

    def ldap_modify(self, ldif: str) -> None:
        self.opendj.modify(ldif)

    def ldap_replace(self, dn: str, attr: str, value: str) -> int:
        return self.opendj.replace_attr(dn, attr, value)

    def last_change_number(self) -> int:
        return self.opendj.last_change_number()

    def stop(self) -> None:
        if self.openidm is not None:
            self.openidm.stop()
        self.opendj.stop()


_ALIVE: list[_Server] = []


@atexit.register
def _stop_all() -> None:
    for server in reversed(list(_ALIVE)):
        with contextlib.suppress(Exception):
            server.stop()


@contextlib.contextmanager
def running(*, opendj_only: bool = False) -> Iterator[RealIDM]:
    """Start OpenDJ (then OpenIDM); always stop both and remove their temp dirs."""
    dj = OpenDJ()
    real = RealIDM(opendj=dj)
    try:
        dj.start()
        if not opendj_only:
            real.openidm = OpenIDM(opendj=dj)
            real.openidm.start()
        yield real
    finally:
        real.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    cmd = args.pop(0) if args and not args[0].startswith("-") else "run"
    if cmd == "resolve":
        try:
            resolve_opendj()
            v, home = resolve_openidm()
        except (DistUnavailableError, openidm_dist.DistBuildError) as e:
            log(f"FAILED: {e}")
            return 1
        log(f"OpenIDM {v} ready to run from {home}")
        return 0
    if cmd != "run":
        print(__doc__, file=sys.stderr)
        return 2

    def _on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)  # also when started with SIGINT ignored (`cmd &`)
    try:
        with running(opendj_only="--opendj-only" in args) as real:
            if real.openidm is not None:
                print(f"IDM_URL={real.idm_url}")
                print(f"IDM_LIVESYNC_SOURCE={real.ldap_source}")
                print(f"IDM_CSV_SOURCE={real.csv_source}")
                print(f"IDM_USERNAME={real.admin_user}")
                print(f"IDM_PASSWORD={real.admin_password}")
            print(f"LDAP_URL={real.ldap_url}")
            print(f"LDAP_BIND_DN={real.ldap_bind_dn}")
            print(f"LDAP_BIND_PASSWORD={real.ldap_bind_password}")
            print(f"LDAP_BASE_DN={real.ldap_base_dn}", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        log("interrupted: stopping")
    except DistUnavailableError as e:
        log(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
