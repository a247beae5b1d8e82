"""Checksummed downloads and safe archive extraction (standard library only).

Every network access of the package goes through :func:`fetch_url`, so tests replace
that one function (``monkeypatch.setattr(stardomain.data.download, "fetch_url", ...)``)
and never touch the network. Files are written to a temporary name in the destination
folder, checked against their MD5 and only then renamed into place, so an interrupted
download never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from stardomain._util.fileio import default_file_mode
from stardomain.errors import StardomainError

USER_AGENT = "stardomain/0.1 (python urllib)"
TIMEOUT_S = 60.0


class DownloadFailed(Exception):
    """Every mirror failed; callers turn this into a StardomainError naming the files."""


def fetch_url(url: str, dest: Path) -> None:
    """Stream ``url`` into the file ``dest`` (the package's only network call)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(dest, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        name = url.rsplit("/", 1)[-1]
        with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=None, leave=False) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))


def md5_file(path: str | os.PathLike[str]) -> str:
    """Hex MD5 of a file, read in chunks (archives are hundreds of MB)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def download_verified(urls: Sequence[str], dest: Path, md5: str) -> None:
    """Download the first mirror whose bytes match ``md5`` to ``dest`` atomically.

    Raises :class:`DownloadFailed` (with every mirror's reason) when none works;
    the caller knows which files and folder to name in the user-facing message.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StardomainError(f"cannot create {dest.parent} ({_one_line(exc)}); set --data-root to a writable folder") from exc
    reasons: list[str] = []
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            fetch_url(url, tmp)
            got = md5_file(tmp)
            if got != md5:
                reasons.append(f"{url}: checksum {got} instead of {md5}")
                continue
            os.chmod(tmp, default_file_mode())  # mkstemp made it 0600: a shared data folder must be readable
            os.replace(tmp, dest)
            return
        except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError, timeouts are OSError
            reasons.append(f"{url}: {_one_line(exc)}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DownloadFailed("; ".join(reasons) or "no mirror configured")


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = member.name
    parts = PurePosixPath(name.replace("\\", "/")).parts
    bad = (
        name.startswith(("/", "\\"))
        or (len(name) > 1 and name[1] == ":")  # Windows drive letter
        or ".." in parts
        or not (member.isfile() or member.isdir())  # no links, devices, fifos
    )
    if bad:
        raise StardomainError(
            f"refusing to extract {archive}: unsafe member {name!r} (absolute path, '..', link "
            f"or special file); delete the archive and download it again"
        )


def safe_extract_tar(archive: Path, dest: Path) -> None:
    """Extract a (gzipped) tar into ``dest`` after rejecting any member that could escape it."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, archive)
            dest.mkdir(parents=True, exist_ok=True)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4; members were checked above
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise StardomainError(f"cannot extract {archive} ({_one_line(exc)}); delete it so it is downloaded again") from exc


def extract_into(archive: Path, folder: Path, inner: str, expected: Sequence[str]) -> None:
    """Extract ``archive`` and move the files ``expected`` of its ``inner`` folder into
    ``folder/inner`` without overwriting files that are already there.

    Extraction happens in a temporary sibling folder, so a crash never leaves a
    half-written file under the final name.
    """
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=folder))
    try:
        safe_extract_tar(archive, tmp)
        source = tmp / inner
        target = folder / inner
        target.mkdir(parents=True, exist_ok=True)
        for name in expected:
            src = source / name
            if not src.is_file():
                raise StardomainError(f"{archive} has no {inner}/{name}; delete it so it is downloaded again")
            if not (target / name).exists():
                os.replace(src, target / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
