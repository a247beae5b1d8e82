"""Optional metrics sinks for progress events: TensorBoard and Weights & Biases.

Results always live on disk (``events.jsonl``, ``results.json``, each checkpoint's ``history``); sinks only
mirror the numbers of the same events for people who watch long runs in those tools. :class:`EventLog` is
the one writer of a command's events: each goes to ``events.jsonl`` (where the command keeps one: ``run``)
and to every configured sink, so no command or study logs to a sink by itself. Both sinks are off by default
and never required (the extras ``stardomain[tensorboard]`` and ``stardomain[wandb]``); asking for one whose
package is missing is a one-line error before any work starts (:func:`require`).

What a sink receives of an event ``{"event": kind, **fields}``: one scalar per numeric field, named
``<kind>/<series>/<field>``. The series is the curve the event belongs to (:data:`SERIES`: one per zoo
member for ``train_epoch``, one per star for ``star_epoch``, one per stage for ``unit``; the kind alone
otherwise) and its step the event's ``epoch``, else the n-th event of that series. Strings, booleans, lists
and nulls are left out (they stay in events.jsonl); nested mappings are flattened (``a/b``). TensorBoard gets
``add_scalar(name, value, step)``; W&B gets one ``log`` per event with the series' own x axis
(``define_metric(series/*, step_metric=series/epoch or series/n)``), as its docs recommend for several curves
that do not share a step.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from stardomain.errors import StardomainError

KNOWN = ("tensorboard", "wandb")
# the settings of `logging: {wandb: {...}}`: passed to wandb.init (name defaults to the run's, dir is the out folder)
WANDB_KEYS = ("project", "entity", "group", "name", "tags", "notes", "job_type", "mode")
WANDB_MODES = ("online", "offline", "disabled")
# the fields that name an event's series (one curve per value), in order; the step of a series is its `epoch`
SERIES: dict[str, tuple[str, ...]] = {"train_epoch": ("zoo", "seed"), "star_epoch": ("tag",), "unit": ("stage",)}
STEP = "epoch"
NOT_METRICS = ("seed", "seeds", "pid", "repeat")  # numbers that name things, never a curve


def check_options(options: Any, where: str = "logging") -> dict[str, Any]:
    """The ``logging`` block, checked: ``{tensorboard: bool, wandb: bool or {project, entity, group, name, tags,
    notes, job_type, mode}}``; a wrong key or value is one line naming it. No package is imported here."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise StardomainError(f"{where}: a mapping such as {{tensorboard: true, wandb: {{project: NAME}}}} (got {options!r})")
    unknown = sorted(set(options) - set(KNOWN))
    if unknown:
        raise StardomainError(f"{where}: unknown sink '{unknown[0]}'; available: {', '.join(KNOWN)}")
    tb = options.get("tensorboard")
    if tb is not None and not isinstance(tb, bool):
        raise StardomainError(f"{where}.tensorboard: true or false (got {tb!r})")
    wb = options.get("wandb")
    if isinstance(wb, Mapping):
        bad = sorted(set(map(str, wb)) - set(WANDB_KEYS))
        if bad:
            raise StardomainError(f"{where}.wandb: unknown key '{bad[0]}'; available: {', '.join(WANDB_KEYS)}")
        if "mode" in wb and wb["mode"] not in WANDB_MODES:
            raise StardomainError(f"{where}.wandb.mode: one of {', '.join(WANDB_MODES)} (got {wb['mode']!r})")
    elif wb is not None and not isinstance(wb, bool):
        raise StardomainError(f"{where}.wandb: true, false or a mapping of wandb.init settings ({', '.join(WANDB_KEYS)}; got {wb!r})")
    return dict(options)


def enabled(options: Mapping[str, Any]) -> list[str]:
    """The sinks ``options`` turns on: ``tensorboard: true``, ``wandb: true`` or a wandb mapping (even an empty one)."""
    return [name for name in KNOWN if options.get(name) is True or isinstance(options.get(name), Mapping)]


def require(names: Any, where: str = "logging") -> None:
    """Refuse, in one line, a sink whose package is not installed (looked up, not imported: no start-up cost)."""
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise StardomainError(
                f"{where} {name}: the {name} package is not installed; pip install 'stardomain[{name}]' (or leave {name} off)"
            )


def check_available(options: Any, where: str = "logging") -> None:
    """:func:`check_options`, then :func:`require` of every sink the options turn on."""
    require(enabled(check_options(options, where)), where)


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())[:300]


def _metrics(fields: Mapping[str, Any], skip: set[str], prefix: str = "") -> Iterator[tuple[str, float]]:
    """The numeric leaves of ``fields`` (nested mappings flattened with '/'), minus the ``skip`` keys of the top level."""
    for key, value in fields.items():
        if not prefix and key in skip:
            continue
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):
            yield prefix + str(key), float(value)
        elif isinstance(value, Mapping):
            yield from _metrics(value, skip, f"{prefix}{key}/")


def _part(key: str, value: Any) -> str:
    """A series name part: a string as it is (zoo 'main'), a number with its key (seed 3 -> 'seed-3')."""
    return str(value) if isinstance(value, str) else f"{key}-{value}"


def series_and_step(kind: str, fields: Mapping[str, Any], counts: dict[str, int]) -> tuple[str, str, int]:
    """(series name, name of its x axis, step) of one event; ``counts`` holds the n of each series without an epoch."""
    names = SERIES.get(kind, ())
    series = "/".join([kind, *(_part(k, fields[k]) for k in names if fields.get(k) is not None)])
    epoch = fields.get(STEP)
    if isinstance(epoch, int) and not isinstance(epoch, bool):
        return series, STEP, epoch
    counts[series] = counts.get(series, 0) + 1
    return series, "n", counts[series]


class Sinks:
    """The configured sinks of one command, opened at the first event (a refused run opens none, so a W&B run
    starts only once there is something to log) and closed by :meth:`close`."""

    def __init__(self, options: Any, out_dir: str | Path, run_name: str, config: Mapping[str, Any] | None = None, where: str = "logging"):
        self.options = check_options(options, where)
        self.names = enabled(self.options)
        require(self.names, where)
        self.out, self.run_name, self.config, self.where = Path(out_dir), run_name, dict(config or {}), where
        self._tb: Any = None
        self._wandb: Any = None
        self._opened = False
        self._counts: dict[str, int] = {}
        self._defined: set[str] = set()

    def _open(self) -> None:
        self._opened = True
        if "tensorboard" in self.names:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # found, yet broken (require() saw the package)
                raise StardomainError(
                    f"{self.where} tensorboard: cannot import it ({_one_line(e)}); pip install 'stardomain[tensorboard]'"
                ) from None
            self._tb = SummaryWriter(log_dir=str(self.out / "tensorboard"))
        if "wandb" in self.names:
            try:
                import wandb
            except ImportError as e:
                self.close()
                raise StardomainError(f"{self.where} wandb: cannot import it ({_one_line(e)}); pip install 'stardomain[wandb]'") from None
            wb = self.options["wandb"]
            settings = {"name": self.run_name, **(dict(wb) if isinstance(wb, Mapping) else {})}
            self.out.mkdir(parents=True, exist_ok=True)
            try:
                self._wandb = wandb.init(dir=str(self.out), config=self.config, **settings)
            except Exception as e:  # not logged in, no network, a project it may not write to: one line, before any unit
                self.close()
                raise StardomainError(
                    f"{self.where} wandb: wandb.init failed ({_one_line(e)}); run `wandb login`, or log offline "
                    "(WANDB_MODE=offline, or logging: {wandb: {mode: offline}}) and `wandb sync` later"
                ) from None

    def log(self, kind: str, fields: Mapping[str, Any]) -> None:
        """One event's numbers to every sink (nothing when no sink is configured or the event holds no number)."""
        if not self.names:
            return
        series, axis, step = series_and_step(kind, fields, self._counts)
        values = dict(_metrics(fields, {*SERIES.get(kind, ()), STEP, *NOT_METRICS}))
        if not values:
            return
        if not self._opened:
            self._open()
        if self._tb is not None:
            for name, value in values.items():
                self._tb.add_scalar(f"{series}/{name}", value, step)
            self._tb.flush()  # a run is watched live: each event is on disk when it is logged
        if self._wandb is not None:
            if series not in self._defined:
                self._wandb.define_metric(f"{series}/*", step_metric=f"{series}/{axis}")
                self._defined.add(series)
            self._wandb.log({f"{series}/{axis}": step, **{f"{series}/{k}": v for k, v in values.items()}})

    def close(self, exit_code: int = 0) -> None:
        """Flush and close every open sink (a W&B run ends with ``exit_code``: 1 marks a failed run); idempotent."""
        tb, wb = self._tb, self._wandb
        self._tb = self._wandb = None
        if tb is not None:
            tb.close()
        if wb is not None:
            wb.finish(exit_code=exit_code)


class EventLog:
    """The one writer of a command's progress events: a JSON line in ``path`` (events.jsonl; None: the command
    keeps none) and the same event to ``sinks``."""

    def __init__(self, path: str | Path | None = None, sinks: Sinks | None = None):
        self.path = None if path is None else Path(path)
        self.sinks = sinks

    def record(self, kind: str, **fields: Any) -> None:
        if self.path is not None:
            from stardomain._util import strictjson

            with open(self.path, "a") as f:
                f.write(strictjson.dumps({"time": time.time(), "event": kind, **fields}) + "\n")  # NaN -> null
        if self.sinks is not None:
            self.sinks.log(kind, fields)

    def recorder(self, kind: str, **fields: Any) -> Callable[[Mapping[str, Any]], None]:
        """A callback (a training loop's ``on_epoch``) that records ``kind`` with ``fields`` and each record it gets."""
        return lambda each: self.record(kind, **fields, **each)

    def close(self, exit_code: int = 0) -> None:
        if self.sinks is not None:
            self.sinks.close(exit_code)

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close(exit_code=0 if exc_type is None else 1)  # a W&B run that raised (or was interrupted) ends as failed
