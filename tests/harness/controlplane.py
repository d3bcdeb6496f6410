"""A real Kubernetes control plane on loopback: etcd + kube-apiserver, no kubelet (like envtest).

The binaries are built by `make tools` (tools/build.sh) into a cache keyed by version.
`ControlPlane` starts both servers on free loopback ports with generated certificates,
RBAC on, waits for /readyz and writes an admin kubeconfig (client cert in O=system:masters).
It can mint least-privilege kubeconfigs: for a ServiceAccount (TokenRequest API) or for a
user certificate that has only the bindings a test creates.

Both servers run in their own process group (tests/harness/processes.py) and are stopped on
`stop()`, on interpreter exit (atexit), on SIGTERM/SIGHUP, and — through PR_SET_PDEATHSIG —
even when the Python process is killed outright. The temporary directory is removed unless
IDMSYNC_KEEP_CONTROLPLANE=1.

    python -m tests.harness.controlplane      # what `make controlplane` runs
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Self

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.harness import processes

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "tools" / "versions.env"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 10.0
PORT_ATTEMPTS = 3


class ControlPlaneError(RuntimeError):
    """The control plane could not be started or used."""


class BinariesMissingError(ControlPlaneError):
    """kube-apiserver or etcd has not been built yet: run `make tools`."""


class KubectlError(subprocess.CalledProcessError):
    """kubectl (or helm) exited non-zero; unlike CalledProcessError, str() includes stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {(self.stderr or '').strip()}"


# --------------------------------------------------------------------------- binaries


def pinned_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """KUBE_VERSION, ETCD_VERSION, HELM_VERSION from tools/versions.env."""
    versions: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            versions[key.strip()] = value.strip()
    return versions


def cache_dir() -> Path:
    return Path(os.environ.get("IDMSYNC_CACHE") or Path.home() / ".cache" / "idmsync")


@dataclass(frozen=True)
class Binaries:
    """Paths of the peers built by tools/build.sh; env vars override the cache location."""

    kube_apiserver: Path
    etcd: Path
    helm: Path
    kubectl: Path | None
    kube_version: str
    etcd_version: str
    helm_version: str

    @classmethod
    def locate(cls) -> Binaries:
        versions = pinned_versions()
        kube, etcd = versions["KUBE_VERSION"], versions["ETCD_VERSION"]
        helm = versions["HELM_VERSION"]
        bin_root = cache_dir() / "bin"
        kubectl = os.environ.get("IDMSYNC_KUBECTL") or shutil.which("kubectl")
        return cls(
            kube_apiserver=_path_from_env(
                "IDMSYNC_KUBE_APISERVER", bin_root / f"kube-{kube}" / "kube-apiserver"
            ),
            etcd=_path_from_env("IDMSYNC_ETCD", bin_root / f"etcd-{etcd}" / "etcd"),
            helm=_path_from_env("IDMSYNC_HELM", bin_root / f"helm-{helm}" / "helm"),
            kubectl=Path(kubectl) if kubectl else None,
            kube_version=kube,
            etcd_version=etcd,
            helm_version=helm,
        )

    def require_servers(self) -> None:
        """Raise BinariesMissingError (naming `make tools`) if a server binary is missing."""
        missing = [str(p) for p in (self.kube_apiserver, self.etcd) if not os.access(p, os.X_OK)]
        if missing:
            raise BinariesMissingError(
                "control-plane binaries not built: " + ", ".join(missing) + ". Run `make tools` "
                "(tools/build.sh; a cold kube-apiserver build takes 10-25 minutes) or point "
                "IDMSYNC_KUBE_APISERVER / IDMSYNC_ETCD at existing binaries."
            )
        if self.kubectl is None:
            raise BinariesMissingError("kubectl not found on PATH (or set IDMSYNC_KUBECTL)")


def _path_from_env(variable: str, default: Path) -> Path:
    value = os.environ.get(variable)
    return Path(value) if value else default


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context serving this certificate (ssl loads it only from files)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
            cert.write_bytes(self.cert_pem)
            key.write_bytes(self.key_pem)
            context.load_cert_chain(cert, key)
        return context


class CertificateAuthority:
    """One CA signs the serving certificate and every client certificate (as envtest does)."""

    def __init__(self, common_name: str = "idmsync-test-ca") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        common_name: str,
        *,
        organizations: Sequence[str] = (),
        server_ips: Sequence[str] = (),
        server_dns: Sequence[str] = (),
    ) -> KeyPair:
        """A leaf certificate: a serving cert when given IPs/DNS names, else a client cert."""
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        serving = bool(server_ips or server_dns)
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [
                        ExtendedKeyUsageOID.SERVER_AUTH
                        if serving
                        else ExtendedKeyUsageOID.CLIENT_AUTH
                    ]
                ),
                critical=False,
            )
        )
        if serving:
            names: list[x509.GeneralName] = [x509.DNSName(d) for d in server_dns]
            names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _private_pem(key))


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# --------------------------------------------------------------------------- processes


def _free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out on 127.0.0.1 (all held open together so they differ)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


class _Server:
    """One child process in its own process group (tests/harness/processes.py), its output
    in a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.process = processes.spawn(argv, log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        processes.stop(self.process, STOP_TIMEOUT_SECONDS)

    def rss_kib(self) -> int:
        return processes.rss_kib(self.pid)


def _wait_for(
    what: str,
    ready: Callable[[], bool],
    server: _Server,
    deadline: float,
) -> None:
    while time.monotonic() < deadline:
        if not server.running():
            raise ControlPlaneError(
                f"{server.name} exited with {server.process.returncode} before {what}; "
                f"log {server.log_path}:\n{server.log_tail()}"
            )
        if ready():
            return
        time.sleep(0.1)
    raise ControlPlaneError(
        f"timed out waiting for {what}; {server.name} log:\n{server.log_tail()}"
    )


# --------------------------------------------------------------------------- kubectl


class Kubectl:
    """Runs kubectl against one kubeconfig. Calls return the CompletedProcess (text mode).

    check=True (the default) raises KubectlError, whose message includes kubectl's stderr.
    """

    def __init__(self, kubeconfig: Path, executable: Path, *, timeout: float = 60.0) -> None:
        self.kubeconfig = kubeconfig
        self.executable = executable
        self.timeout = timeout

    def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.executable), f"--kubeconfig={self.kubeconfig}", *args]
        completed = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=self.timeout, check=False
        )
        if check and completed.returncode != 0:
            raise KubectlError(completed.returncode, argv, completed.stdout, completed.stderr)
        return completed

    def apply(
        self, manifest: str, *, namespace: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`kubectl apply -f -` with the YAML (one or more documents) given as a string."""
        namespace_args = ["--namespace", namespace] if namespace else []
        return self("apply", *namespace_args, "-f", "-", stdin=manifest, check=check)

    def get_json(self, *args: str) -> Any:
        """`kubectl get ... -o json`, parsed."""
        return json.loads(self("get", *args, "-o", "json").stdout)

    def with_kubeconfig(self, kubeconfig: Path) -> Kubectl:
        return Kubectl(kubeconfig, self.executable, timeout=self.timeout)


# --------------------------------------------------------------------------- control plane


class ControlPlane:
    """etcd + kube-apiserver on loopback. Use as a context manager, or start()/stop().

    After start(): `kubeconfig` (admin, system:masters), `server` (https URL), `ca_pem`,
    `kubectl` (a Kubectl bound to the admin kubeconfig), `startup_seconds`.

    Start it from a thread that outlives it (the main thread, as pytest fixtures do): the
    servers are tied to the starting thread with PR_SET_PDEATHSIG and die when it exits.
    """

    def __init__(
        self,
        binaries: Binaries | None = None,
        *,
        log: Callable[[str], None] | None = None,
        audit: bool = False,
    ) -> None:
        self.binaries = binaries or Binaries.locate()
        #: write an audit log of every write (see `audit_log`): benchmarks count API writes
        self.audit = audit
        self._log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self._servers: list[_Server] = []
        self._lock = threading.Lock()
        self._workdir: Path | None = None
        self._ca: CertificateAuthority | None = None
        self._minted = 0
        self.server = ""
        self.etcd_url = ""
        self.startup_seconds = 0.0

    # ---- lifecycle

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Self:
        self.binaries.require_servers()
        started = time.monotonic()
        deadline = started + START_TIMEOUT_SECONDS
        _register_for_cleanup(self)
        try:
            for attempt in range(1, PORT_ATTEMPTS + 1):
                self._workdir = Path(tempfile.mkdtemp(prefix="idmsync-controlplane-"))
                try:
                    self._start(deadline)
                    break
                except ControlPlaneError as error:
                    # A free port can be taken between probing and binding (other harnesses
                    # run on this machine too): start over on fresh ports.
                    if "address already in use" not in str(error) or attempt == PORT_ATTEMPTS:
                        raise
                    self._log(f"port taken, retrying ({attempt}/{PORT_ATTEMPTS})")
                    self._stop_servers_and_remove_workdir()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        self._log(
            f"control plane ready in {self.startup_seconds:.1f}s: kube-apiserver "
            f"{self.binaries.kube_version} at {self.server}, etcd {self.binaries.etcd_version}"
        )
        return self

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd, and remove the work directory. Idempotent."""
        self._stop_servers_and_remove_workdir()
        _unregister(self)

    def _stop_servers_and_remove_workdir(self) -> None:
        with self._lock:
            for server in reversed(self._servers):
                server.stop()
            self._servers.clear()
            if self._workdir is not None:
                if os.environ.get("IDMSYNC_KEEP_CONTROLPLANE") == "1":
                    self._log(f"control plane stopped; kept {self._workdir}")
                else:
                    shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None

    def _start(self, deadline: float) -> None:
        workdir = self.workdir
        etcd_port, peer_port, api_port = _free_ports(3)
        self.etcd_url = f"http://127.0.0.1:{etcd_port}"
        self.server = f"https://127.0.0.1:{api_port}"

        etcd = self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                f"--data-dir={workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._write_pki()
        _wait_for("etcd /health", self._etcd_healthy, etcd, deadline)

        pki = workdir / "pki"
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers={self.etcd_url}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'serving.crt'}",
                f"--tls-private-key-file={pki / 'serving.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--secure-port={api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--allow-privileged=true",
                "--authorization-mode=RBAC",
                "--disable-admission-plugins=ServiceAccount",
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                *self._audit_flags(),
            ],
        )
        context = self._admin_ssl_context()
        _wait_for("kube-apiserver /readyz", lambda: self._readyz(context), apiserver, deadline)

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver; etcd keeps the state (a control plane upgrade, a crash)."""
        self._apiserver().stop()

    def start_apiserver(self) -> None:
        """Start kube-apiserver again (same port, certificates and flags); wait until ready."""
        old = self._apiserver()
        with self._lock:
            self._servers.remove(old)
        server = self._spawn(old.name, old.argv)
        context = self._admin_ssl_context()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        _wait_for("kube-apiserver /readyz", lambda: self._readyz(context), server, deadline)

    def serving_pair(self, *ips: str) -> KeyPair:
        """A serving certificate for ``ips`` from this control plane's CA: a proxy in front
        of the API server is then trusted by the same kubeconfigs."""
        if self._ca is None:
            raise ControlPlaneError("control plane is not running")
        return self._ca.issue("idmsync-test-proxy", server_ips=ips)

    def _apiserver(self) -> _Server:
        with self._lock:
            return next(s for s in self._servers if s.name == "kube-apiserver")

    def _audit_flags(self) -> list[str]:
        """Audit every write as it completes; Events at Request level (whom they are about)."""
        if not self.audit:
            return []
        policy = {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["RequestReceived", "ResponseStarted"],
            "rules": [
                {
                    "level": "Request",
                    "verbs": ["create", "update", "patch"],
                    "resources": [
                        {"group": "", "resources": ["events"]},
                        {"group": "events.k8s.io", "resources": ["events"]},
                    ],
                },
                {"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "get"]},
                {"level": "None"},
            ],
        }
        path = self.workdir / "audit-policy.yaml"
        path.write_text(yaml.safe_dump(policy))
        return [
            f"--audit-policy-file={path}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
        ]

    @property
    def audit_log(self) -> Path:
        """JSON lines, one per audited request (only with ``audit=True``)."""
        return self.workdir / "audit.log"

    def audit_events(self) -> list[dict[str, Any]]:
        """The audit log so far, parsed."""
        if not self.audit_log.exists():
            return []
        lines = self.audit_log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def _spawn(self, name: str, argv: Sequence[str]) -> _Server:
        with self._lock:
            server = _Server(name, argv, self.workdir / f"{name}.log")
            self._servers.append(server)
        return server

    def _write_pki(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(mode=0o700)
        ca = self._ca = CertificateAuthority()
        serving = ca.issue(
            "kube-apiserver",
            server_ips=["127.0.0.1", "10.0.0.1"],
            server_dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
        )
        admin = ca.issue("idmsync-admin", organizations=["system:masters"])
        sa_key = ec.generate_private_key(ec.SECP256R1())
        files = {
            "ca.crt": ca.cert_pem,
            "serving.crt": serving.cert_pem,
            "serving.key": serving.key_pem,
            "admin.crt": admin.cert_pem,
            "admin.key": admin.key_pem,
            "sa.key": _private_pem(sa_key),
            "sa.pub": sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        }
        for name, content in files.items():
            (pki / name).write_bytes(content)
        self._write_kubeconfig(self.kubeconfig, "idmsync-admin", admin)

    # ---- probes

    def _etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as response:
                return bool(json.load(response).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _admin_ssl_context(self) -> ssl.SSLContext:
        pki = self.workdir / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return context

    def _readyz(self, context: ssl.SSLContext) -> bool:
        try:
            with urllib.request.urlopen(f"{self.server}/readyz", timeout=2, context=context) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.HTTPError):
            return False

    # ---- what tests use

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise ControlPlaneError("control plane is not running")
        return self._workdir

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig: client certificate in group system:masters."""
        return self.workdir / "admin.kubeconfig"

    @property
    def ca_pem(self) -> bytes:
        return (self.workdir / "pki" / "ca.crt").read_bytes()

    @property
    def kubectl(self) -> Kubectl:
        """kubectl as admin."""
        assert self.binaries.kubectl is not None
        return Kubectl(self.kubeconfig, self.binaries.kubectl)

    def helm(
        self, *args: str, kubeconfig: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned helm against this control plane (admin unless `kubeconfig`).

        helm's cache/config/data homes live in the work directory, not in ~.
        """
        if not os.access(self.binaries.helm, os.X_OK):
            raise BinariesMissingError(f"helm not built: {self.binaries.helm}. Run `make tools`.")
        home = self.workdir / "helm"
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        argv = [str(self.binaries.helm), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        completed = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=120, check=False
        )
        if check and completed.returncode != 0:
            raise KubectlError(completed.returncode, argv, completed.stdout, completed.stderr)
        return completed

    def version(self) -> dict[str, str]:
        """kube-apiserver's /version document (gitVersion, gitMajor, gitMinor, ...)."""
        with urllib.request.urlopen(
            f"{self.server}/version", timeout=5, context=self._admin_ssl_context()
        ) as response:
            return dict(json.load(response))

    def etcd_version(self) -> dict[str, str]:
        """etcd's /version document (etcdserver, etcdcluster)."""
        with urllib.request.urlopen(f"{self.etcd_url}/version", timeout=5) as response:
            return dict(json.load(response))

    def rss_kib(self) -> dict[str, int]:
        """Resident memory of each server process, KiB."""
        return {server.name: server.rss_kib() for server in self._servers}

    def running(self) -> bool:
        """True while every server process started so far is alive."""
        return bool(self._servers) and all(server.running() for server in self._servers)

    def pids(self) -> dict[str, int]:
        return {server.name: server.pid for server in self._servers}

    def user_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig with a client certificate for `user` in `groups`.

        The user has only what RBAC grants it (system:authenticated's discovery and
        self-review rules, plus bindings the test creates): use it for least-privilege tests.
        """
        if self._ca is None:
            raise ControlPlaneError("control plane is not running")
        if "system:masters" in groups:
            raise ValueError("use .kubeconfig for admin access")
        pair = self._ca.issue(user, organizations=groups)
        return self._write_kubeconfig(self._mint_path(f"user-{user}"), user, pair)

    def service_account_kubeconfig(
        self, namespace: str, name: str, *, create: bool = True, duration_seconds: int = 3600
    ) -> Path:
        """A kubeconfig authenticating as ServiceAccount namespace/name with a bound token.

        The token comes from the TokenRequest API (`kubectl create token`). The
        ServiceAccount is created first unless `create=False` (no controller-manager here,
        so namespaces have no `default` ServiceAccount).
        """
        if create:
            self.kubectl.apply(
                yaml.safe_dump(
                    {
                        "apiVersion": "v1",
                        "kind": "ServiceAccount",
                        "metadata": {"name": name, "namespace": namespace},
                    }
                )
            )
        token = self.kubectl(
            "create", "token", name, "-n", namespace, f"--duration={duration_seconds}s"
        ).stdout.strip()
        path = self._mint_path(f"sa-{namespace}-{name}")
        self._write_kubeconfig_data(
            path, f"system:serviceaccount:{namespace}:{name}", {"token": token}, namespace
        )
        return path

    def bind(
        self,
        role: str,
        *,
        user: str | None = None,
        service_account: str | None = None,
        namespace: str | None = None,
        binding_name: str | None = None,
    ) -> None:
        """Bind `clusterrole/<name>` or `role/<name>` to a user or a ServiceAccount ("ns:name").

        With `namespace` a RoleBinding is created there, otherwise a ClusterRoleBinding.
        """
        kind, _, role_name = role.partition("/")
        if kind not in {"clusterrole", "role"} or not role_name:
            raise ValueError(f"role must be clusterrole/<name> or role/<name>, got {role!r}")
        if (user is None) == (service_account is None):
            raise ValueError("give exactly one of user= or service_account=")
        subject = f"--user={user}" if user else f"--serviceaccount={service_account}"
        name = binding_name or f"{role_name}-{(user or service_account or '').replace(':', '-')}"
        if namespace:
            args = ["create", "rolebinding", name, "-n", namespace, f"--{kind}={role_name}"]
        else:
            args = ["create", "clusterrolebinding", name, f"--clusterrole={role_name}"]
        self.kubectl(*args, subject)

    def _mint_path(self, stem: str) -> Path:
        self._minted += 1
        safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem)
        return self.workdir / f"{safe}-{self._minted}.kubeconfig"

    def _write_kubeconfig(self, path: Path, user: str, pair: KeyPair) -> Path:
        credentials = {
            "client-certificate-data": base64.b64encode(pair.cert_pem).decode(),
            "client-key-data": base64.b64encode(pair.key_pem).decode(),
        }
        return self._write_kubeconfig_data(path, user, credentials, None)

    def _write_kubeconfig_data(
        self, path: Path, user: str, credentials: Mapping[str, str], namespace: str | None
    ) -> Path:
        context: dict[str, str] = {"cluster": "idmsync-test", "user": user}
        if namespace:
            context["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "idmsync-test",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": base64.b64encode(
                            (self.workdir / "pki" / "ca.crt").read_bytes()
                        ).decode(),
                    },
                }
            ],
            "users": [{"name": user, "user": dict(credentials)}],
            "contexts": [{"name": "idmsync-test", "context": context}],
            "current-context": "idmsync-test",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path


# --------------------------------------------------------------------------- cleanup on exit

_running: set[ControlPlane] = set()
_running_lock = threading.Lock()
_cleanup_installed = False


def _register_for_cleanup(control_plane: ControlPlane) -> None:
    global _cleanup_installed
    with _running_lock:
        _running.add(control_plane)
        if _cleanup_installed:
            return
        _cleanup_installed = True
    atexit.register(_stop_all)
    # A default SIGTERM/SIGHUP would end the interpreter without running atexit. Treat them
    # like Ctrl-C instead: pytest then stops the session and tears fixtures down, and
    # `python -m tests.harness.controlplane` shuts down as on Ctrl-C.
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) is signal.SIG_DFL:
                signal.signal(signum, _interrupt_on_signal)


def _unregister(control_plane: ControlPlane) -> None:
    with _running_lock:
        _running.discard(control_plane)


def _stop_all() -> None:
    with _running_lock:
        running = list(_running)
    for control_plane in running:
        control_plane.stop()


def _interrupt_on_signal(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


# --------------------------------------------------------------------------- make controlplane


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.harness.controlplane",
        description="Run etcd + kube-apiserver on loopback until Ctrl-C.",
    )
    parser.add_argument(
        "--kubeconfig-copy",
        type=Path,
        help="also copy the admin kubeconfig here (removed again on exit)",
    )
    args = parser.parse_args(argv)
    # A shell starts background jobs with SIGINT ignored, and Python keeps it ignored then;
    # this entry point promises to stop on Ctrl-C/SIGINT wherever it was started from.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        control_plane = ControlPlane()
        with control_plane:
            kubeconfig = control_plane.kubeconfig
            if args.kubeconfig_copy:
                kubeconfig = args.kubeconfig_copy.resolve()
                shutil.copyfile(control_plane.kubeconfig, kubeconfig)
                kubeconfig.chmod(0o600)
            rss = control_plane.rss_kib()
            print(
                f"version {control_plane.version()['gitVersion']}; resident memory "
                + ", ".join(f"{name} {kib // 1024} MiB" for name, kib in rss.items()),
                file=sys.stderr,
            )
            print(f"KUBECONFIG={kubeconfig}", flush=True)
            print("Ctrl-C to stop", file=sys.stderr, flush=True)
            try:
                while control_plane.running():
                    time.sleep(0.5)
                print("a server exited; stopping", file=sys.stderr)
                return 1
            finally:
                if args.kubeconfig_copy:
                    args.kubeconfig_copy.unlink(missing_ok=True)
    except KeyboardInterrupt:
        print("control plane stopped", file=sys.stderr)
        return 0
    except ControlPlaneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
