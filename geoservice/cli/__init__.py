"""The ``servicemap`` command line (a composition root: it may import every package)."""
