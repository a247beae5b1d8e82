"""The zoo use case: train a zoo's missing members and reuse its finished ones, written once.

The CLI's ``train`` only parses and prints around :func:`run_zoo`; where the members are trained (this process,
batched, or units of an executor) is a parameter, so reuse, refusals and clean-up are the same whoever trains them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch

from stardomain._util.progress import ProgressConfig
from stardomain.training import zoo
from stardomain.training.loop import Recipe

if TYPE_CHECKING:
    from stardomain.data.protocol import Data


@dataclass
class ZooRun:
    """What :func:`run_zoo` did: every member's checkpoint (in the order they were finished) and those reused."""

    paths: list[Path] = field(default_factory=list)
    reused: set[Path] = field(default_factory=set)  # finished before with these very settings: not retrained


def reuse_line(done: Sequence[int], seeds: Sequence[int], out_dir: str | Path) -> str | None:
    """One line on the members already finished in ``out_dir``: the user sees nothing is retrained (None: none)."""
    if not done:
        return None
    if len(done) == len(seeds):
        return f"nothing to do: finished ({zoo.seed_list(done)} in {out_dir} have these settings; reused, not retrained)"
    return (
        f"resuming: {len(done)} of {len(seeds)} models done ({zoo.seed_list(done)} in {out_dir} have these settings: reused, not retrained)"
    )


def run_zoo(
    dataset: Data,
    model: str,
    options: Mapping[str, Any],
    recipe: Recipe,
    seeds: Sequence[int],
    out_dir: str | Path,
    *,
    role: str = "source",
    device: str | torch.device = "cpu",
    progress: bool | ProgressConfig | None = None,
    batch_models: int = 1,
    notes: Sequence[str] = (),
    notify: Callable[[str], None] | None = None,
    on_member: Callable[[Path, bool], None] | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    run_units: Callable[[list[int]], None] | None = None,
) -> ZooRun:
    """Train the ``seeds`` of one zoo into ``out_dir`` (members finished with these settings are reused; a folder
    holding another run is refused in one line before anything is trained).

    ``notify`` gets the reuse line, then ``notes`` (the caller's own, said once the inputs are known good), then
    :func:`~stardomain.training.zoo.train_zoo`'s lines. ``run_units(seeds)``, when given, trains the members elsewhere
    (one executor unit each, :mod:`stardomain.experiment.zoo_units`); else they train here, ``batch_models`` at a time.
    ``on_member(path, reused)`` is called for every member once it is finished (``reused``: it was, before this call).
    """
    from stardomain._util.fileio import remove_stray_temps

    started = time.time()
    # temps a killed run left in this zoo folder (and its claims/, for executors): only there, only ours
    remove_stray_temps(out_dir, older_than=started, subfolders=[".", "claims"])
    config, _ = zoo.member_config(dataset, model, options, recipe, None, role)
    done = [s for s in seeds if zoo.check_member(zoo.member_path(out_dir, s), config, role)]
    run = ZooRun(reused={zoo.member_path(out_dir, s) for s in done})
    say = notify if notify is not None else (lambda line: None)
    for line in [reuse_line(done, seeds, out_dir), *notes]:
        if line:
            say(line)

    def finished(path: Path) -> None:
        run.paths.append(Path(path))
        if on_member is not None:
            on_member(Path(path), Path(path) in run.reused)

    if run_units is not None:
        run_units(list(seeds))
        for s in seeds:
            finished(zoo.member_path(out_dir, s))
    else:
        zoo.train_zoo(
            dataset,
            model,
            options,
            recipe,
            seeds,
            out_dir,
            device=device,
            progress=progress,
            role=role,
            on_member=finished,
            batch_models=batch_models,
            notify=notify,
            on_epoch=on_epoch,
        )
    remove_stray_temps(out_dir, older_than=started, subfolders=[".", "claims"])
    return run
