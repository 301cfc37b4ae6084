"""`servicemap map`: the standalone file, and clear failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SERVICEMAP = str(Path(sys.executable).parent / "servicemap")


def _run(args: list[str], database: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SERVICEMAP, *args],
        env={**os.environ, "DATABASE_URL": database},
        capture_output=True,
        text=True,
    )


def test_standalone_file_carries_everything(sample_db: str, tmp_path: Path):
    out = tmp_path / "share" / "map.html"
    done = _run(["map", "--out", str(out), "--lang", "zh-Hant"], sample_db)
    assert done.returncode == 0, done.stderr
    html = out.read_text(encoding="utf-8")
    assert '<html lang="zh-Hant">' in html
    # inlined: no reference to the app's static routes or any other site's scripts
    assert "/static/" not in html and "<script src" not in html and "<link rel" not in html
    assert "L.markerClusterGroup" in html and '"rows":[[' in html
    assert "images/layers.png" not in html
    assert not list(out.parent.glob(".*partial"))


def test_unknown_layer_and_language_fail_clearly(sample_db: str, tmp_path: Path):
    out = tmp_path / "map.html"
    done = _run(["map", "--out", str(out), "--layer", "zoo"], sample_db)
    assert done.returncode != 0
    assert "zoo" in done.stderr and "toilet" in done.stderr
    done = _run(["map", "--out", str(out), "--lang", "fr"], sample_db)
    assert done.returncode != 0 and "zh-Hans" in done.stderr
    assert not out.exists()
