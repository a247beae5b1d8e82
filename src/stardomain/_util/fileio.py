"""The one way stardomain writes a file: temp file in the same folder, fsync, rename.

Why one helper: a reader (a second job, a resumed run, a colleague's ``ls``) must never see half
a file, and every output must carry the user's normal permissions. ``tempfile.mkstemp`` creates
0600 files, which made every checkpoint, JSON and figure of a run private; here the temp file
gets ``0o666 & ~umask`` (0644 under the usual umask 022) before it is renamed into place, exactly
what ``open(path, "w")`` would have given.

Temp names. Every temp file stardomain writes is ``.stardomain-<target name>.<random>.sd.tmp`` (:func:`temp_path`,
:data:`TEMP_PREFIX`, :data:`TEMP_SUFFIX`), in the folder of the file it becomes. The prefix and suffix are
stardomain's own, so a user's file never looks like one (the name still ends in ``.tmp``, which ignore rules
and backup tools know). :func:`remove_stray_temps` removes only such names, only in the exact folders a
command names (never a walk of the tree below, never through a symlink below the folder it was given), and
only those older than the command. Temps of the naming before (``.<name>.<random>.tmp``) are left alone:
nothing reads them, and a user's file can look exactly like one, so they are the user's to delete.
"""

from __future__ import annotations

import json
import os
import re
import stat
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
    "temp_path",
    "temp_prefix",
    "write_temp",
]

# the one temp naming: .stardomain-<target name>.<random>.sd.tmp (see the module docstring)
TEMP_PREFIX = ".stardomain-"
TEMP_SUFFIX = ".sd.tmp"


def temp_prefix(name: str) -> str:
    """What the temp files of the target file ``name`` start with (their random part and :data:`TEMP_SUFFIX` follow)."""
    return f"{TEMP_PREFIX}{name}."


def temp_path(path: str | os.PathLike[str], token: str) -> Path:
    """The temp file of ``path`` with random part ``token`` (letters, digits, ``_``), beside it."""
    path = Path(path)
    return path.with_name(f"{temp_prefix(path.name)}{token}{TEMP_SUFFIX}")


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=TEMP_SUFFIX)
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


# every temp name this project writes (mkstemp here, the claims, per-epoch state: all through temp_prefix)
_TEMP_NAME = re.compile(r"^\.stardomain-(?P<target>.+)\.(?P<token>[A-Za-z0-9_]+)\.sd\.tmp$")


def is_temp_name(name: str, targets: Iterable[str] | None = None) -> bool:
    """Whether ``name`` is one of stardomain's temp files (of one of ``targets``, file names, when given)."""
    m = _TEMP_NAME.match(name)
    if m is None:
        return False
    if targets is None:
        return True
    # the target part may hold dots: a name is the temp of target t when it is exactly prefix(t) + token + suffix
    return any(
        name.startswith(temp_prefix(t)) and re.fullmatch(r"[A-Za-z0-9_]+", name[len(temp_prefix(t)) : -len(TEMP_SUFFIX)]) for t in targets
    )


def _owned_folder(root: Path, rel: str | os.PathLike[str]) -> Path | None:
    """``root / rel`` when every component below ``root`` is a real folder (no symlink, no ``..``); else None."""
    rel = Path(rel)
    if rel.is_absolute() or ".." in rel.parts:
        return None
    p = root
    for part in rel.parts:
        p = p / part
        try:
            if not stat.S_ISDIR(os.lstat(p).st_mode):  # a symlink (to a folder too) or a file: never entered
                return None
        except OSError:
            return None
    return p


def remove_stray_temps(
    folder: str | os.PathLike[str],
    older_than: float,
    *,
    subfolders: Iterable[str | os.PathLike[str]] = (".",),
    targets: Iterable[str] | None = None,
) -> list[Path]:
    """Delete stardomain's temp files last modified before ``older_than`` (a time.time()) in each of ``subfolders``
    (paths relative to ``folder``; ``"."``, the default, is ``folder`` itself); returns them. ``targets`` (file
    names): only the temps of those.

    Only these exact folders are looked into, never the tree below them; ``folder`` itself may be a symlink (a
    symlinked ``--out``), but a subfolder reached through a symlink is skipped, so the cleanup never leaves
    ``folder``. Only regular files named :func:`is_temp_name` are removed, never a symlink.

    Why this is safe: a temp lives from its write to its rename, milliseconds; one last modified before
    this run began (and still there after the run's data loading) belongs to a writer that was killed,
    so no later rename needs it. A run passes its own start time, so the temps a concurrent run on the
    same folder writes from then on are never touched.
    """
    root = Path(folder)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    names = None if targets is None else list(targets)
    folders = [p for p in (_owned_folder(root, rel) for rel in subfolders) if p is not None]
    for d in dict.fromkeys(folders):
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if not is_temp_name(e.name, names):
                continue
            try:
                if e.is_file(follow_symlinks=False) and e.stat(follow_symlinks=False).st_mtime < older_than:
                    os.unlink(e.path)
                    removed.append(Path(e.path))
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
    """Stable, strict JSON (sorted keys, indented, trailing newline; NaN and infinities as null, see
    :mod:`stardomain._util.strictjson`): the same object always gives the same bytes."""
    from stardomain._util.strictjson import finite

    return (json.dumps(finite(obj), indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


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
