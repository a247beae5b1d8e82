"""Progress that shows up where the run is watched: a tqdm bar on a terminal, plain lines in a log.

Under SLURM, nohup or CI, stderr is a file and tqdm draws nothing, so a long training would print
nothing for minutes. Here a loop reports through :class:`Progress`, which picks its form from a
:class:`ProgressConfig` (or the legacy ``progress`` argument: None = automatic, False = silent):

- ``bar``: tqdm (what a terminal user expects);
- ``lines``: one plain line per finished step (epoch, model, pair) and at least every
  ``interval`` seconds (30 by default) inside a long one: what, how far, elapsed, ETA;
- ``json``: the same events as JSON lines, for machines (``--log-json``);
- ``off``: nothing (``--quiet``);
- ``auto``: ``bar`` when the stream is a terminal, else ``lines``.

The clock and the interval are injectable so tests need no real waiting.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, TextIO, TypeVar

from stardomain._util import strictjson
from stardomain._util.units import value_text
from stardomain.errors import StardomainError

__all__ = ["MODES", "Progress", "ProgressConfig", "format_duration", "format_event", "resolve"]

MODES = ("auto", "bar", "lines", "json", "off")
T = TypeVar("T")


@dataclass(frozen=True)
class ProgressConfig:
    """How progress is shown; passed wherever a ``progress=`` argument is taken."""

    mode: str = "auto"
    interval: float = 30.0  # seconds between lines inside one long step
    stream: TextIO | None = None  # None: sys.stderr at the time of writing (so pytest/click capture works)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise StardomainError(f"progress mode {self.mode!r} is unknown; use one of {', '.join(MODES)}")
        if not self.interval > 0:
            raise StardomainError(f"progress interval must be > 0 seconds (got {self.interval})")

    def out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def effective_mode(self) -> str:
        """``auto`` resolved against the stream: a bar on a terminal, lines anywhere else."""
        if self.mode != "auto":
            return self.mode
        isatty = getattr(self.out(), "isatty", None)
        return "bar" if isatty is not None and isatty() else "lines"


def resolve(progress: ProgressConfig | bool | str | None) -> ProgressConfig:
    """The legacy ``progress`` argument as a config: None/True = auto, False = off, a mode name = that mode."""
    if isinstance(progress, ProgressConfig):
        return progress
    if progress is None or progress is True:
        return ProgressConfig("auto")
    if progress is False:
        return ProgressConfig("off")
    if isinstance(progress, str):
        return ProgressConfig(progress)
    raise StardomainError(f"progress must be None, a bool, a mode name or a ProgressConfig (got {type(progress).__name__})")


def format_duration(seconds: float) -> str:
    """12 -> '0:12', 754 -> '12:34', 5000 -> '1:23:20'."""
    s = max(0, int(round(seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_event(kind: str, fields: dict[str, Any]) -> str:
    """A pipeline event as one readable log line: 'trained zoo=main seed=3 in 12.3 s' (accuracies in percent)."""
    seconds = fields.get("seconds")
    line = " ".join([kind] + [f"{k}={value_text(k, v)}" for k, v in fields.items() if k != "seconds"])
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        line += f" in {seconds:.1f} s" if seconds < 60 else f" in {format_duration(seconds)}"
    return line


class Progress:
    """Progress of one loop over ``total`` steps named ``unit`` (epoch, t, sample, ...).

    Call :meth:`step` when a step finishes (with the numbers worth a log line), and
    :meth:`inner` from inside a long step (it prints only when ``interval`` has passed).
    ``each_step=False`` prints lines only on the interval (and then at the end), for loops of
    many short steps (the points of one interpolation curve): one shorter than the interval
    prints nothing.
    """

    def __init__(
        self,
        what: str,
        total: int | None,
        unit: str = "step",
        progress: ProgressConfig | bool | str | None = None,
        initial: int = 0,
        each_step: bool = True,
    ):
        self.config = resolve(progress)
        self.mode = self.config.effective_mode()
        self.what, self.total, self.unit, self.each_step = what, total, unit, each_step
        self.done = self.initial = initial
        self._clock = self.config.clock
        self.start = self._last = self._clock()
        self._emitted = False
        self._bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=what, unit=unit, leave=False, file=self.config.out())

    # -- reporting ---------------------------------------------------------------------------
    def step(self, **fields: Any) -> None:
        """One step finished; ``fields`` (e.g. train_loss=0.41, test_acc=0.9722) go into its line or bar postfix:
        accuracies as given (fractions) in ``json`` mode, in percent (``test_acc=97.22%``) in a line or a bar."""
        self.done += 1
        if self.mode == "off":
            return
        if self._bar is not None:
            self._bar.update(1)
            if fields:
                self._bar.set_postfix({k: value_text(k, v) for k, v in fields.items() if v is not None}, refresh=False)
            return
        last = self.total is not None and self.done >= self.total
        # a loop of short steps that reported along the way reports its end too; one under `interval` stays silent
        if self.each_step or self._due() or (last and self._emitted):
            self._emit(fields)

    def inner(self, done: int, total: int | None = None, unit: str = "batch", **fields: Any) -> None:
        """Inside the current step: ``done`` of ``total`` ``unit``s; a line only if ``interval`` has passed."""
        if self.mode in ("lines", "json") and self._due():
            self._emit(fields, inner=(done, total, unit))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def wrap(self, iterable: Iterable[T]) -> Iterator[T]:
        """Yield from ``iterable``, counting a step after each item (and closing at the end)."""
        try:
            for item in iterable:
                yield item
                self.step()
        finally:
            self.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------
    def _due(self) -> bool:
        return self._clock() - self._last >= self.config.interval

    def _eta(self, elapsed: float, fraction_done: float) -> float | None:
        """Seconds left, from the pace of this session's steps (resumed steps took no time here)."""
        if self.total is None:
            return None
        worked = fraction_done - self.initial
        left = self.total - fraction_done
        if worked <= 0:
            return None
        return elapsed * left / worked

    def _emit(self, fields: dict[str, Any], inner: tuple[int, int | None, str] | None = None) -> None:
        now = self._clock()
        self._last, self._emitted = now, True
        elapsed = now - self.start
        frac = float(self.done)
        if inner is not None and inner[1]:
            frac += min(1.0, inner[0] / inner[1])
        eta = self._eta(elapsed, frac)
        if self.mode == "json":
            record: dict[str, Any] = {
                "event": "progress",
                "what": self.what,
                "unit": self.unit,
                "done": self.done,
                "total": self.total,
                "elapsed_s": round(elapsed, 3),
                "eta_s": None if eta is None else round(eta, 3),
            }
            if inner is not None:
                record.update({"inner_done": inner[0], "inner_total": inner[1], "inner_unit": inner[2]})
            record.update(fields)
            line = strictjson.dumps(record, default=str)  # NaN -> null: every JSON line parses anywhere
        else:
            if inner is None:
                where = f"{self.unit} {self.done}/{self.total}" if self.total else f"{self.unit} {self.done}"
                if self.total:
                    where += f" ({100 * self.done / self.total:.0f}%)"
            else:
                current = f"{self.unit} {self.done + 1}/{self.total}" if self.total else f"{self.unit} {self.done + 1}"
                where = f"{current}, {inner[2]} {inner[0]}/{inner[1]}" if inner[1] else f"{current}, {inner[2]} {inner[0]}"
            parts = [f"{self.what}: {where}", f"elapsed {format_duration(elapsed)}"]
            if eta is not None:
                parts.append(f"ETA {format_duration(eta)}")
            shown = " ".join(f"{k}={value_text(k, v)}" for k, v in fields.items() if v is not None)
            line = " | ".join(parts + ([shown] if shown else []))
        out = self.config.out()
        out.write(line + "\n")
        out.flush()
