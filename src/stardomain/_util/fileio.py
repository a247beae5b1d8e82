"""The one way stardomain writes a file: temp file in the same folder, fsync, rename.

Why one helper: a reader (a second job, a resumed run, a colleague's ``ls``) must never see half
a file, and every output must carry the user's normal permissions. ``tempfile.mkstemp`` creates
0600 files, which made every checkpoint, JSON and figure of a run private; here the temp file
gets ``0o666 & ~umask`` (0644 under the usual umask 022) before it is renamed into place, exactly
what ``open(path, "w")`` would have given.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_write_with",
    "commit",
    "default_file_mode",
    "is_temp_name",
    "remove_stray_temps",
    "save_figure",
    "write_temp",
]


def default_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 minus the process umask (read at call time)."""
    # os.umask can only be read by setting it; set it straight back (process-wide, so read it per write)
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_temp(path: str | os.PathLike[str], writer: Callable[[BinaryIO], object]) -> str:
    """Run ``writer`` on a fsynced temp file beside ``path``; returns the temp name for :func:`commit`.

    The temp file is removed if ``writer`` fails, so a failed write leaves nothing behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # a full disk or ulimit -f: say which file it was
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    return tmp


# every temp name this project writes: ``.<name>.<random>.tmp`` (mkstemp here, claims, per-epoch state,
# the test suite's fake workers); nothing else in a run folder looks like it
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of this project's temp files (what :func:`write_temp` and the claims create)."""
    return bool(_TEMP_NAME.match(name))


def remove_stray_temps(root: str | os.PathLike[str], older_than: float) -> list[Path]:
    """Delete the temp files under ``root`` last modified before ``older_than`` (a time.time()); returns them.

    Why this is safe: a temp lives from its write to its rename, milliseconds; one last modified before
    this run began (and still there after the run's data loading) belongs to a writer that was killed,
    so no later rename needs it. A run passes its own start time, so the temps a concurrent run on the
    same folder writes from then on are never touched.
    """
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if not is_temp_name(name):
                continue
            p = Path(dirpath) / name
            try:
                if p.is_file() and not p.is_symlink() and p.stat().st_mtime < older_than:
                    p.unlink()
                    removed.append(p)
            except FileNotFoundError:
                pass  # renamed or removed by its writer meanwhile
    return removed


def commit(pairs: Iterable[tuple[str, str | os.PathLike[str]]]) -> None:
    """Rename temp files into place in order; on failure remove the temps that are left.

    Several files written together (weights, then the metadata that marks them complete) are all
    fully on disk before the first rename.
    """
    pairs = list(pairs)
    try:
        for tmp, path in pairs:
            os.replace(tmp, path)
    finally:
        for tmp, _ in pairs:
            Path(tmp).unlink(missing_ok=True)


def atomic_write_with(path: str | os.PathLike[str], writer: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` atomically through ``writer(binary_file)``; returns ``path``."""
    path = Path(path)
    commit([(write_temp(path, writer), path)])
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Readers see the old file or the new one, never half of it."""
    return atomic_write_with(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_bytes(obj: Any) -> bytes:
    """Stable JSON (sorted keys, indented, trailing newline): the same object always gives the same bytes."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_bytes(path, json_bytes(obj))


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 150, **savefig_kwargs: Any) -> Path:
    """Render a matplotlib ``Figure`` to ``path`` atomically; the format comes from the suffix (png, pdf, svg).

    Attaches an Agg canvas when the figure has none, so no pyplot backend is ever needed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    if fig.canvas is None or type(fig.canvas).__name__ == "FigureCanvasBase":
        FigureCanvasAgg(fig)
    fmt = path.suffix.lstrip(".").lower() or "png"
    opts = {"bbox_inches": "tight", **savefig_kwargs}
    if fmt == "pdf":
        # no creation date in the PDF: the same figure gives the same bytes on a re-run
        opts.setdefault("metadata", {"CreationDate": None})
    return atomic_write_with(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi, **opts))
