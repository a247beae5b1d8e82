"""Per-unit claims: at most one worker computes a unit at a time, on any number of machines.

A claim is a small JSON file (host, pid, time, token) that appears atomically with ``os.link``
(fails if the name exists, like O_EXCL, and is safe on NFS), so a reader never sees half of one.
The holder touches it every ``heartbeat`` seconds. A claim is stale — and only then broken — when
its holder is on this host and its process is gone, or when nobody has touched it for
``stale_after`` seconds (a node that died). Breaking goes through a second O_EXCL file so two
breakers cannot both break and both take the unit.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from stardomain._util.fileio import temp_path

STALE_AFTER = 600.0  # seconds without a heartbeat before another host may take the unit over
_BREAK_STALE = 60.0  # a break marker this old belongs to a breaker that died mid-break


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs on this host (a zombie counts as dead: it computes nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_claim(path: Path) -> tuple[dict[str, Any], float] | None:
    """(holder info, last heartbeat time) or None when there is no claim."""
    try:
        mtime = path.stat().st_mtime
        info = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}, time.time()  # unreadable now: treat as fresh, look again later
    return info, mtime


def is_stale(info: dict[str, Any], mtime: float, stale_after: float = STALE_AFTER) -> bool:
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int) and not _pid_alive(info["pid"]):
        return True
    return time.time() - mtime > stale_after


class Claim:
    """A held claim; ``release()`` (or leaving the ``with`` block) removes it if it is still ours."""

    def __init__(self, path: Path, token: str, heartbeat: float):
        self.path, self.token = path, token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat,), daemon=True)
        self._thread.start()

    def _ours(self) -> bool:
        got = read_claim(self.path)
        return got is not None and got[0].get("token") == self.token

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            if self._ours():
                try:
                    os.utime(self.path)
                except OSError:
                    pass

    def release(self) -> None:
        self._stop.set()
        if self._ours():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _break_if_stale(path: Path, stale_after: float) -> bool:
    """Remove ``path`` if its claim is stale; True when the name is free now."""
    marker = path.with_name(path.name + ".break")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        try:
            if time.time() - marker.stat().st_mtime > _BREAK_STALE:
                marker.unlink()
        except FileNotFoundError:
            pass
        return False
    try:
        got = read_claim(path)
        if got is None:
            return True
        if is_stale(*got, stale_after=stale_after):
            path.unlink(missing_ok=True)
            return True
        return False
    finally:
        marker.unlink(missing_ok=True)


def acquire(path: str | os.PathLike, unit_id: str, stale_after: float = STALE_AFTER) -> Claim | None:
    """Take the claim at ``path``, breaking it only when stale; None while someone else holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    info = {"unit": unit_id, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), "token": token}
    tmp = temp_path(path, token)  # .stardomain-<name>.<token>.sd.tmp: the worker removes what a kill left
    tmp.write_text(json.dumps(info, allow_nan=False) + "\n")  # strict JSON (every value is finite)
    try:
        for _ in range(3):
            try:
                os.link(tmp, path)
            except FileExistsError:
                if not _break_if_stale(path, stale_after):
                    return None
                continue
            return Claim(path, token, heartbeat=max(0.05, min(30.0, stale_after / 5)))
        return None
    finally:
        tmp.unlink(missing_ok=True)
