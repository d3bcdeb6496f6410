"""The operator image (``make image``: tools/image/build.sh) opened with buildah, so tests run
what a pod runs: the image's own filesystem, entrypoint and user.

    ImageContainer  a working container from the OCI archive, in throw-away vfs storage;
                    ``config`` is the image's OCI config, ``argv(...)`` runs a command inside
                    it (chroot isolation, the host's network: loopback reaches the test servers)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class BuiltImage:
    """What tools/image/build.sh recorded in image.env."""

    name: str
    archive: Path

    @classmethod
    def locate(cls) -> BuiltImage:
        folder = Path(os.environ.get("IDMSYNC_IMAGE_DIR") or REPO_ROOT / "build" / "image")
        described = folder / "image.env"
        if not described.is_file():
            raise FileNotFoundError(f"{described} missing: run `make image`")
        fields = dict(
            line.split("=", 1) for line in described.read_text().splitlines() if "=" in line
        )
        archive = Path(fields["ARCHIVE"])
        if not archive.is_file():
            raise FileNotFoundError(f"{archive} missing: run `make image`")
        return cls(name=fields["IMAGE"], archive=archive)


class ImageContainer:
    def __init__(self, buildah: str, storage: Path, container: str) -> None:
        self.buildah = buildah
        self.storage = storage
        self.container = container
        self.config: dict[str, Any] = self._inspect()["OCIv1"]["config"]

    @classmethod
    @contextmanager
    def open(cls, image: BuiltImage, workdir: Path) -> Iterator[ImageContainer]:
        buildah = shutil.which("buildah")
        if buildah is None:
            raise FileNotFoundError("buildah not installed: run `make image`")
        storage = workdir / "storage"
        created = _run(
            [buildah, *_storage(storage), "from", "--quiet", f"oci-archive:{image.archive}"]
        )
        try:
            yield cls(buildah, storage, created.stdout.strip())
        finally:
            subprocess.run(
                [buildah, *_storage(storage), "rm", "--all"], capture_output=True, check=False
            )
            subprocess.run(
                [buildah, *_storage(storage), "rmi", "--all", "--force"],
                capture_output=True,
                check=False,
            )
            shutil.rmtree(storage, ignore_errors=True)

    def _inspect(self) -> dict[str, Any]:
        inspected = _run(
            [
                self.buildah,
                *_storage(self.storage),
                "inspect",
                "--type",
                "container",
                self.container,
            ]
        )
        result: dict[str, Any] = json.loads(inspected.stdout)
        return result

    def argv(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] = {},
        mounts: Mapping[Path, str] = {},
        user: str | None = None,
    ) -> list[str]:
        """buildah run as the image's user (or ``user``), with ``env`` and read-only bind
        ``mounts``."""
        argv = [self.buildah, *_storage(self.storage), "run", "--isolation", "chroot"]
        argv += ["--network", "host", "--user", user or self.config["User"]]
        for key, value in env.items():
            argv += ["--env", f"{key}={value}"]
        for source, target in mounts.items():
            argv += ["--volume", f"{source}:{target}:ro"]
        return [*argv, self.container, "--", *command]


def _storage(root: Path) -> list[str]:
    return ["--storage-driver", "vfs", "--root", str(root), "--runroot", str(root / "run")]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(list(argv), capture_output=True, text=True, timeout=300, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{argv}: {completed.stderr}")
    return completed
