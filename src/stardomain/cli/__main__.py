"""``python -m stardomain.cli``: the same entry point as the ``stardomain`` command."""

from stardomain.cli.app import main

main()
