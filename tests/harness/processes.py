"""Server processes of the harnesses (etcd, kube-apiserver, OpenDJ, OpenIDM): started in a
process group of their own, tied to the harness, and stopped with every process in the group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def spawn(
    argv: Sequence[str],
    log: Path,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    append: bool = False,
    reap: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with its output in ``log``, in a new session (its own process group:
    Ctrl-C reaches the harness, which stops its servers in order).

    The child gets SIGKILL when the thread that started it dies, which covers a harness killed
    with SIGKILL, where neither atexit nor signal handlers run: util-linux ``setpriv`` sets
    PR_SET_PDEATHSIG and execs (the setting survives exec). Unlike a ``preexec_fn``, that is
    safe while other threads run. Without setpriv, argv runs as given.

    PR_SET_PDEATHSIG reaches only the child, not its children (the JVM under OpenIDM's
    startup.sh). With ``reap`` a watchdog ends the child's whole process group, and removes
    the directory ``reap``, once this process is gone without having stopped the child.
    """
    setpriv = shutil.which("setpriv")
    command = [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else list(argv)
    with log.open("ab" if append else "wb") as out:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    if reap is not None:
        pgid = process.pid
        script = (
            f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 2; done; "
            f"kill -TERM -- -{pgid} 2>/dev/null; "
            f"for i in $(seq 30); do kill -0 -- -{pgid} 2>/dev/null || break; sleep 1; done; "
            f"kill -KILL -- -{pgid} 2>/dev/null; rm -rf '{reap}'"
        )
        _watchdogs[pgid] = subprocess.Popen(
            ["bash", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    return process


_watchdogs: dict[int, subprocess.Popen[bytes]] = {}


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the process's group, SIGKILL it after ``timeout``; return once the whole group
    is gone (a JVM under a wrapper script keeps writing files after the script exits)."""
    pgid = process.pid  # a new session: the child's pid is its group's id
    watchdog = _watchdogs.pop(pgid, None)
    if watchdog is not None and watchdog.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(watchdog.pid, signal.SIGKILL)  # the watchdog and its sleep
        watchdog.wait(10)
    process.poll()  # reap an exited leader, or the group looks alive
    if not _group_alive(pgid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
        process.poll()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


def rss_kib(pid: int, *, descendants: bool = False) -> int:
    """Resident memory of ``pid`` (and its descendants), KiB, from /proc; 0 once it is gone."""
    children: dict[int, list[int]] = {}
    if descendants:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    stat = (entry / "stat").read_text()
                    children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(
                        int(entry.name)
                    )
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        todo.extend(children.get(current, []))
    return total
