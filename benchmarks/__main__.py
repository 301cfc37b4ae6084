"""Run every benchmark (``make bench``): each ``benchmarks/bench_*.py`` module's ``main()``.

``python -m benchmarks [name ...] [--option ...]`` runs only the named ones (e.g. ``ingest
nearest``); the options (``--quick``, ``--rows N``, ``--seconds N``) are read by each benchmark
that knows them, so ``python -m benchmarks --quick`` runs every benchmark with short runs.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    names = sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if m.name.startswith("bench_")
    )
    # names are the arguments that name a benchmark; the rest are options and their values,
    # left in sys.argv for the benchmarks that read it
    wanted = {f"bench_{a.removeprefix('bench_')}" for a in argv} & set(names)
    sys.argv[1:] = [a for a in argv if f"bench_{a.removeprefix('bench_')}" not in wanted]
    failed = []
    for name in names:
        if wanted and name not in wanted:
            continue
        print(f"\n=== {name} ===", flush=True)
        started = time.monotonic()
        module = importlib.import_module(f"benchmarks.{name}")
        try:
            module.main()
        except SystemExit as exc:
            if exc.code not in (0, None):
                failed.append(name)
        print(f"=== {name}: {time.monotonic() - started:.0f}s ===", flush=True)
    if failed:
        print(f"benchmarks below target or failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
