"""What the command line prints besides results: progress settings, log lines, environment facts.

Kept out of ``cli.py`` so every command gets the same behaviour from the global options:
``--quiet`` silences progress bars, progress lines and log lines; ``--log-json`` turns them into
JSON lines on stderr. Results still go to stdout, errors stay one ``error: ...`` line.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import click

from stardomain._util import strictjson
from stardomain._util.progress import ProgressConfig

__all__ = ["environment_lines", "event_logger", "progress_config", "summary_line", "version_message"]


def _global(name: str) -> bool:
    """A global option (``stardomain --quiet train ...``) of the running command, False outside one."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return bool(obj.get(name)) if isinstance(obj, dict) else False


def progress_config(quiet: bool = False) -> ProgressConfig:
    """The progress setting of a command: its own ``-q`` or the global ``--quiet`` / ``--log-json``."""
    if quiet or _global("quiet"):
        return ProgressConfig("off")
    if _global("log_json"):
        return ProgressConfig("json")
    return ProgressConfig("auto")


def notice(kind: str, message: str) -> None:
    """A ``warning:`` or ``note:`` line on stderr, shown even with ``--quiet`` (it is not progress); under
    ``--log-json`` a JSON record like every other stderr line, so a log parser never meets plain text."""
    if _global("log_json"):
        click.echo(strictjson.dumps({"event": kind, "time": time.time(), "message": message}), err=True)
    else:
        click.echo(f"{kind}: {message}", err=True)


def event_logger(quiet: bool = False) -> Callable[[str], None] | None:
    """Log callback for ``run``/``demo``: '[20:31:05 +0:12] trained zoo=main seed=3 in 1.2 s' lines on stderr."""
    if quiet or _global("quiet"):
        return None
    start = time.monotonic()
    as_json = _global("log_json")

    def log(message: str) -> None:
        elapsed = time.monotonic() - start
        if as_json:
            click.echo(
                strictjson.dumps({"event": "log", "time": time.time(), "elapsed_s": round(elapsed, 3), "message": message}), err=True
            )
        else:
            from stardomain._util.progress import format_duration

            click.echo(f"[{time.strftime('%H:%M:%S')} +{format_duration(elapsed)}] {message}", err=True)

    return log


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stardomain")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def version_message() -> str:
    """``stardomain --version``: the package, torch and Python versions (what a bug report needs)."""
    import torch

    return f"stardomain {package_version()} (torch {torch.__version__}, Python {platform.python_version()})"


def _devices() -> list[str]:
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            found.append(f"cuda:{i} ({torch.cuda.get_device_name(i)})")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def environment_lines() -> list[str]:
    """Versions and hardware, for ``stardomain info``: what decides whether a run here matches one elsewhere."""
    import torch

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    return [
        f"stardomain: {package_version()}",
        f"python:   {platform.python_version()} ({sys.executable})",
        f"torch:    {torch.__version__} ({build}, {torch.get_num_threads()} CPU threads)",
        f"devices:  {', '.join(_devices())}",
    ]


def summary_line(results: dict[str, Any], report: Any, seconds: float) -> str:
    """The demo's last line: what was done, how long it took and where the report is."""
    from stardomain._util.progress import format_duration

    models = results.get("models", {})
    parts = [f"{len(models.get('sources', []))} source and {len(models.get('held_out', []))} held-out models"]
    stars = len(list((Path(report).parent / "stars").glob("*.safetensors")))
    if stars:
        parts.append(f"{stars} star model{'s' if stars > 1 else ''}")
    summary = results.get("barriers", {}).get("summary", {})
    pairs = sum(int(g.get("n_pairs", 0)) for g in summary.values() if isinstance(g, dict))
    if pairs:
        parts.append(f"a barrier study over {pairs} pairs")
    if "bma" in results:
        parts.append("a BMA study")
    return f"done in {format_duration(seconds)}: {', '.join(parts)}; report: {report}"
