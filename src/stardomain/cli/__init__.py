"""The ``stardomain`` command line: one command per pipeline stage, plus ``run`` and ``demo``.

Every user mistake surfaces as one line on stderr (``error: ...``) and exit code 2. The group and
entry point live in :mod:`.app`; each ``*_cmd`` module registers its commands on the group when
imported, so importing this package gives the whole CLI.
"""

from stardomain.cli import models_cmd, pairs_cmd, run_cmd, star_cmd  # noqa: F401  (registers the commands)
from stardomain.cli.app import cli, main
from stardomain.cli.common import load_data_for, parse_options
from stardomain.cli.star_cmd import repeat_path

__all__ = ["repeat_path", "cli", "load_data_for", "main", "parse_options"]
