"""The built-in studies beyond the main barrier groups, one module each (registered on import).

Every module here that defines a study registers it (:func:`~stardomain.experiment.study.register_study`),
and this package imports every module it holds: adding a study is adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
