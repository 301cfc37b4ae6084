"""``python -m geoservice.cli``: the same as the ``servicemap`` command."""

from geoservice.cli.main import main

main()
