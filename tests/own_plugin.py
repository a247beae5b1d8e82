"""A plugin module as a user writes one: importing it registers models under short names.

Only ever imported by a subprocess (``--plugin own_plugin``), so the registry of the test
session itself stays as shipped.
"""

from own_models import build_lnmlp, build_vit

from stardomain import models

models.register("own_lnmlp")(build_lnmlp)
models.register("own_vit")(build_vit)
