"""``stardomain.starlight`` loads its names on first use (so :mod:`.config` imports without torch); its submodules
and ``dir()`` must still be what a plain package offers: ``sl.writer`` and ``dir(sl)`` used to fail or miss them."""

from __future__ import annotations

import subprocess
import sys

import stardomain.starlight as sl

SUBMODULES = ("algorithm", "config", "writer")


def test_every_export_is_listed_once_and_resolves():
    assert sorted(sl.__all__) == sorted(sl._EXPORTS)
    for name, module in sl._EXPORTS.items():
        assert getattr(sl, name) is getattr(sys.modules[f"stardomain.starlight.{module}"], name)


def test_dir_lists_the_exports_and_the_submodules():
    assert set(sl.__all__) | set(SUBMODULES) <= set(dir(sl))


def test_submodules_are_attributes_in_a_fresh_interpreter():
    """A fresh interpreter: here the submodules were imported long ago (and so bound on the package already)."""
    code = (
        "import sys, stardomain.starlight as sl\n"
        "assert 'torch' not in sys.modules, 'importing the package imported torch'\n"
        "assert {'writer', 'config', 'algorithm', 'train_star'} <= set(dir(sl)), dir(sl)\n"
        "assert sl.config is sys.modules['stardomain.starlight.config']\n"
        "assert sl.writer.train_star is sl.train_star and sl.algorithm.Starlight is sl.Starlight\n"
        "try:\n    sl.nonesuch\nexcept AttributeError as e:\n    print(e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "module 'stardomain.starlight' has no attribute 'nonesuch'"
