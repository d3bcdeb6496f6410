"""Build a runnable OpenIDM 6.1.0 from Maven Central alone (what `make idm-dist` runs).

Central serves every OpenIDM 6.1.0 runtime jar but neither the distribution zip nor the parent POM
``openidm-project:pom:6.1.0`` that every module names; without that parent Maven cannot read any
module's descriptor. So:

1. a stand-in parent POM (``tools/openidm/parent-pom.xml``) goes into a cache-local Maven
   repository;
2. our own POM, generated from ``tools/openidm/artifacts.txt`` (the pinned runtime closure, each
   dependency with ``exclusions *:*`` so nothing else is fetched), is resolved with a settings file
   that sends every request to Central (the module POMs name other repositories);
3. the jars are laid out the way our launcher configuration expects (``bin/``, ``bundle/``,
   ``connectors/``), our configuration and scripts from ``tools/openidm/layout/`` are copied over,
   and a keystore and truststore are generated with keytool.

Nothing is copied from the OpenIDM distribution or its sources. The result is cached under
``$IDMSYNC_CACHE/openidm-<version>-<layout hash>/openidm`` (the hash covers everything in
``tools/openidm``, so a change to our configuration rebuilds the layout; the jars stay in the
cache-local Maven repository, so that takes seconds).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIR = REPO_ROOT / "tools" / "openidm"
VERSION = "6.1.0"

# Plugins pinned so a fresh machine resolves the same thing every time.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
INSTALL_PLUGIN = "org.apache.maven.plugins:maven-install-plugin:3.1.3"

# Secrets of a throwaway test install (the keystore lives in the cache and in temp dirs only).
KEYSTORE_PASSWORD = "changeit"


class DistBuildError(RuntimeError):
    """The OpenIDM build failed; the message carries Maven's (or keytool's) own error lines."""


@dataclass(frozen=True)
class Artifact:
    group: str
    artifact: str
    type: str
    classifier: str
    version: str

    @classmethod
    def parse(cls, line: str) -> Artifact:
        parts = line.split(":")
        if len(parts) == 6:
            group, artifact, type_, classifier, version, _scope = parts
        elif len(parts) == 5:
            group, artifact, type_, version, _scope = parts
            classifier = ""
        else:
            raise ValueError(f"not group:artifact:type[:classifier]:version:scope: {line!r}")
        return cls(group, artifact, type_, classifier, version)

    @property
    def file_name(self) -> str:
        """What copy-dependencies writes with prependGroupId."""
        classifier = f"-{self.classifier}" if self.classifier else ""
        return f"{self.group}.{self.artifact}-{self.version}{classifier}.{self.type}"


def log(msg: str) -> None:
    print(f"[openidm-dist {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    return Path(os.environ.get("IDMSYNC_CACHE") or Path.home() / ".cache" / "idmsync")


def artifacts() -> list[Artifact]:
    lines = (SOURCE_DIR / "artifacts.txt").read_text().splitlines()
    return [Artifact.parse(ln.strip()) for ln in lines if ln.strip() and not ln.startswith("#")]


def layout_hash() -> str:
    """Hash of every input in tools/openidm (names and bytes) and of this builder."""
    h = hashlib.sha256()
    for path in sorted([*SOURCE_DIR.rglob("*"), Path(__file__)]):
        if path.is_file():
            h.update(str(path.relative_to(REPO_ROOT)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def dist_dir(digest: str | None = None) -> Path:
    return cache_root() / f"openidm-{VERSION}-{digest or layout_hash()}"


def built_home() -> Path | None:
    home = dist_dir() / "openidm"
    return home if (home / "startup.sh").is_file() else None


# --------------------------------------------------------------------------- Maven


def _central_url() -> str:
    """Central's address as the local Maven ships it in its super POM (not written in our repo)."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DistBuildError("mvn is not on PATH (Maven 3.6+ is needed to build OpenIDM)")
    lib = Path(mvn).resolve().parents[1] / "lib"
    for jar in sorted(lib.glob("maven-model-builder-*.jar")):
        with zipfile.ZipFile(jar) as zf:
            text = zf.read("org/apache/maven/model/pom-4.0.0.xml").decode()
        m = re.search(r"<id>central</id>.*?<url>([^<]+)</url>", text, re.S)
        if m:
            return m.group(1).strip()
    raise DistBuildError(f"cannot find Central's URL in the super POM under {lib}")


def _settings_xml(local_repo: Path) -> str:
    url = _central_url()
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by tests/harness/openidm_dist.py: every repository request goes to Central. -->
<settings xmlns="http://maven.apache.org/SETTINGS/1.0.0">
  <localRepository>{escape(str(local_repo))}</localRepository>
  <mirrors>
    <mirror><id>central-only</id><mirrorOf>*</mirrorOf><url>{escape(url)}</url></mirror>
  </mirrors>
</settings>
"""


def _pom_xml(items: list[Artifact]) -> str:
    deps = []
    for a in items:
        classifier = f"<classifier>{a.classifier}</classifier>" if a.classifier else ""
        deps.append(
            f"    <dependency><groupId>{a.group}</groupId><artifactId>{a.artifact}</artifactId>"
            f"<version>{a.version}</version><type>{a.type}</type>{classifier}"
            "<exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion>"
            "</exclusions></dependency>"
        )
    body = "\n".join(deps)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by tests/harness/openidm_dist.py from tools/openidm/artifacts.txt. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.idmsync.build</groupId>
  <artifactId>openidm-runtime</artifactId>
  <version>{VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
{body}
  </dependencies>
</project>
"""


def _mvn(args: list[str], *, cwd: Path) -> None:
    cmd = ["mvn", "-B", "-ntp", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        errors = [
            ln for ln in proc.stdout.splitlines() if ln.startswith("[ERROR]") and ln != "[ERROR]"
        ]
        raise DistBuildError(
            f"mvn {args[-1] if args else ''} exited {proc.returncode}: "
            + ("\n".join(errors[:8]) or proc.stdout[-2000:] or proc.stderr[-2000:])
        )


def resolve_jars(work: Path) -> Path:
    """All pinned artifacts, copied to work/jars as group.artifact-version[-classifier].type."""
    maven_repo = cache_root() / "maven-repo"
    maven_repo.mkdir(parents=True, exist_ok=True)
    settings = work / "settings.xml"
    settings.write_text(_settings_xml(maven_repo))
    (work / "pom.xml").write_text(_pom_xml(artifacts()))
    parent = SOURCE_DIR / "parent-pom.xml"
    log("installing the stand-in parent POM openidm-project:pom:6.1.0 into the local repository")
    _mvn(
        [
            "-s",
            str(settings),
            f"{INSTALL_PLUGIN}:install-file",
            f"-Dfile={parent}",
            f"-DpomFile={parent}",
        ],
        cwd=work,
    )
    log(f"resolving {len(artifacts())} pinned artifacts from Central")
    jars = work / "jars"
    _mvn(
        [
            "-s",
            str(settings),
            "-f",
            str(work / "pom.xml"),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={jars}",
            "-Dmdep.prependGroupId=true",
            "-Dmdep.useRepositoryLayout=false",
        ],
        cwd=work,
    )
    missing = [a.file_name for a in artifacts() if not (jars / a.file_name).is_file()]
    if missing:
        raise DistBuildError(f"Maven reported success but did not copy: {', '.join(missing)}")
    return jars


# --------------------------------------------------------------------------- layout

# What goes to bin/ rather than bundle/ (the launcher puts bin/* on the class path).
BIN_JARS = {
    "org.apache.felix:org.apache.felix.framework": "felix.jar",
    "org.openidentityplatform.openidm:openidm-shell": "openidm.jar",
}
CONNECTORS = ("ldap-connector", "csvfile-connector")
# Not installed as bundles: the framework and OSGi specs Felix itself provides, the shell consoles,
# the admin web console, the other connectors (they log "Unable to load class" without their
# extras), workflow's fat jar (workflow is not configured), and test/build-only libraries.
NOT_BUNDLES = re.compile(
    r"""^(org\.apache\.felix\.org\.apache\.felix\.(framework|gogo|shell|webconsole)
        |org\.osgi\.osgi\.(core|cmpn)
        |org\.openidentityplatform\.openicf\.connectors\.
        |org\.openidentityplatform\.openidm\.openidm-(shell|felix-webconsole)-
        |org\.openidentityplatform\.openidm\.openidm-workflow-activiti-.*-jar-with-dependencies
        |org\.openidentityplatform\.openidm\.tools\.
        |org\.assertj\.
        )""",
    re.X,
)


def _place_jars(jars: Path, home: Path) -> dict[str, int]:
    counts = {"bin": 0, "bundle": 0, "connectors": 0}
    for d in ("bin", "bundle", "connectors"):
        (home / d).mkdir(parents=True, exist_ok=True)
    for a in artifacts():
        src = jars / a.file_name
        key = f"{a.group}:{a.artifact}"
        if key in BIN_JARS:
            shutil.copy2(src, home / "bin" / BIN_JARS[key])
            counts["bin"] += 1
        elif a.artifact == "launcher-zip":
            with zipfile.ZipFile(src) as zf:
                launcher = [n for n in zf.namelist() if re.search(r"launcher[^/]*\.jar$", n)]
                if not launcher:
                    raise DistBuildError(f"{src.name} holds no launcher jar: {zf.namelist()}")
                (home / "bin" / "launcher.jar").write_bytes(zf.read(launcher[0]))
            counts["bin"] += 1
        elif a.group == "org.openidentityplatform.openicf.connectors":
            if a.artifact in CONNECTORS:
                shutil.copy2(src, home / "connectors" / a.file_name)
                counts["connectors"] += 1
        elif a.type == "jar" and not NOT_BUNDLES.match(a.file_name):
            shutil.copy2(src, home / "bundle" / a.file_name)
            counts["bundle"] += 1
    return counts


def _keytool(args: list[str]) -> None:
    proc = subprocess.run(["keytool", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DistBuildError(
            f"keytool {args[0]} exited {proc.returncode}: {proc.stdout}{proc.stderr}"
        )


def _make_keystores(home: Path) -> None:
    """The keys conf/boot/boot.properties names: an RSA pair for the JWT session and TLS, and the
    symmetric keys for config encryption, self-service and the session HMAC."""
    sec = home / "security"
    sec.mkdir(parents=True, exist_ok=True)
    ks, ts = sec / "keystore.jceks", sec / "truststore"
    common = [
        "-storetype",
        "JCEKS",
        "-keystore",
        str(ks),
        "-storepass",
        KEYSTORE_PASSWORD,
        "-keypass",
        KEYSTORE_PASSWORD,
    ]
    _keytool(
        [
            "-genkeypair",
            *common,
            "-alias",
            "openidm-localhost",
            "-keyalg",
            "RSA",
            "-keysize",
            "2048",
            "-validity",
            "3650",
            "-dname",
            "CN=localhost,O=idmsync test",
        ]
    )
    for alias, alg, size in (
        ("openidm-sym-default", "AES", "128"),
        ("openidm-selfservice-key", "AES", "128"),
        ("openidm-jwtsessionhmac-key", "HmacSHA256", "256"),
    ):
        _keytool(["-genseckey", *common, "-alias", alias, "-keyalg", alg, "-keysize", size])
    cert = sec / "openidm-localhost.pem"
    _keytool(
        [
            "-exportcert",
            "-rfc",
            "-storetype",
            "JCEKS",
            "-keystore",
            str(ks),
            "-storepass",
            KEYSTORE_PASSWORD,
            "-alias",
            "openidm-localhost",
            "-file",
            str(cert),
        ]
    )
    _keytool(
        [
            "-importcert",
            "-noprompt",
            "-storetype",
            "JKS",
            "-keystore",
            str(ts),
            "-storepass",
            KEYSTORE_PASSWORD,
            "-alias",
            "openidm-localhost",
            "-file",
            str(cert),
        ]
    )


def build() -> Path:
    """Build (or reuse) the OpenIDM home; returns its path. DistBuildError names what failed."""
    home = built_home()
    if home is not None:
        return home
    t0 = time.monotonic()
    digest = layout_hash()  # once: the inputs may be edited while Maven runs
    target = dist_dir(digest)
    target.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=target))
    try:
        jars = resolve_jars(work)
        staged = work / "openidm"
        shutil.copytree(SOURCE_DIR / "layout", staged, symlinks=True)
        counts = _place_jars(jars, staged)
        _make_keystores(staged)
        (staged / "startup.sh").chmod(0o755)
        size = sum(f.stat().st_size for f in jars.iterdir())
        info = {
            "version": VERSION,
            "layout_hash": digest,
            "artifacts": len(artifacts()),
            "download_bytes": size,
            "jars": counts,
            "build_seconds": round(time.monotonic() - t0, 1),
        }
        (staged / "dist.json").write_text(json.dumps(info, indent=2) + "\n")
        staged.rename(target / "openidm")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # Keep a few layouts (several checkouts of the repo may share the cache), drop the oldest.
    layouts = sorted(cache_root().glob(f"openidm-{VERSION}-*"), key=lambda d: d.stat().st_mtime)
    for old in layouts[:-3]:
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    log(f"OpenIDM {VERSION} built in {time.monotonic() - t0:.1f}s: {target / 'openidm'} {info}")
    return target / "openidm"


if __name__ == "__main__":
    try:
        print(build())
    except DistBuildError as e:
        log(f"OpenIDM build FAILED: {e}")
        sys.exit(1)
