"""What `servicemap ingest` prints, as a user sees it (issue 17, section 2): in an 80- or
40-column terminal, and in a log (no terminal), every figure is printed whole and every message
starts its own line.

The terminal runs are real: the CLI in a pseudo-terminal of the given size, its output played
through pyte (a VT100 emulator) so that rich's transient progress bars erase what they erase,
and the screen read back. The reported defects: a 1,000,000-row load printed `read 10000…`,
`inserted 10000…` and headers `outco…`, `inser…` at 80 columns; `links: +0 ~0 -0done in 0.3s`
lacked a line break.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import termios
from pathlib import Path

import numpy as np
import pyte
import pytest
from rich.cells import cell_len

from tests.ingest.util import ROOT, SERVICEMAP, run_cli

#: the summary's figures as a stacked block prints them: "  name   value"
FIGURE = re.compile(r"^\s+(read|inserted|updated|unchanged|removed|rejected|warnings)\s+([\d,]+)$")


def _toilets_csv(path: Path, n: int, *, bad_last: bool = False) -> Path:
    """A district toilet list as a GB-style CSV: Chinese headers, WGS84 degrees."""
    rng = np.random.default_rng(17)
    lon = rng.uniform(114.10, 114.20, n)
    lat = rng.uniform(22.53, 22.60, n)
    with path.open("w", encoding="utf-8") as out:
        out.write("编号,名称,经度,纬度\n")
        out.writelines(
            f"GC-{i},公厕{i},{x:.6f},{y:.6f}\n"
            for i, (x, y) in enumerate(zip(lon[: n - bad_last], lat[: n - bad_last], strict=True))
        )
        if bad_last:
            out.write(f"GC-{n - 1},坏行,东经,22.55\n")
    return path


def _mapping(tmp_path: Path) -> str:
    path = tmp_path / "toilets.toml"
    path.write_text(
        '[geometry]\nx = "经度"\ny = "纬度"\n[fields]\nname = "名称"\n', encoding="utf-8"
    )
    return str(path)


def _figures(text: str) -> dict[str, int]:
    return {
        m.group(1): int(m.group(2).replace(",", ""))
        for line in text.splitlines()
        if (m := FIGURE.match(line.rstrip()))
    }


@pytest.mark.slow
def test_seven_digit_figures_whole_in_a_40_column_log(fresh_db: str, tmp_path: Path) -> None:
    path = _toilets_csv(tmp_path / "toilets.csv", 1_000_000, bad_last=True)
    done = run_cli(
        fresh_db, "ingest", str(path), "--layer", "toilet", "--mapping", _mapping(tmp_path),
        "--dry-run", "--skip-invalid",
        COLUMNS="40",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = _figures(done.stdout)
    assert figures["read"] == 1_000_000 and figures["inserted"] == 999_999
    assert figures["rejected"] == 1
    assert "1,000,000" in done.stdout and "999,999" in done.stdout
    # the bad row's number (the file's line: the header is line 1) whole too
    assert re.search(r"^\s+where\s+row 1000001\s*$", done.stderr, re.M), done.stderr
    for text in (done.stdout, done.stderr):
        assert "…" not in text
        assert all(cell_len(line.rstrip()) <= 40 for line in text.splitlines()), text


def _in_terminal(columns: int, *args: str, env: dict[str, str]) -> list[str]:
    """Run `servicemap ARGS` in a pseudo-terminal `columns` wide; the screen's lines after."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 60, columns, 0, 0))
    environment = {**os.environ, **env, "PYTHONPATH": str(ROOT), "TERM": "xterm-256color"}
    environment.update(COLUMNS=str(columns), LINES="60")
    process = subprocess.Popen(
        [SERVICEMAP, *args], stdin=follower, stdout=follower, stderr=follower, env=environment
    )
    os.close(follower)
    data = bytearray()
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        data += chunk
    os.close(leader)
    assert process.wait(timeout=300) == 0, data.decode(errors="replace")
    screen = pyte.Screen(columns, 400)
    pyte.ByteStream(screen).feed(bytes(data))
    return [line.rstrip() for line in screen.display if line.strip()]


@pytest.mark.parametrize("columns", [80, 40])
def test_terminal_shows_whole_figures_and_separate_lines(
    fresh_db: str, tmp_path: Path, columns: int
) -> None:
    path = _toilets_csv(tmp_path / "罗湖区公共厕所.csv", 1200)
    env = {"DATABASE_URL": fresh_db}
    lines = _in_terminal(
        columns, "ingest", str(path), "--layer", "toilet", "--mapping", _mapping(tmp_path), env=env
    )
    figures = _figures("\n".join(lines))
    assert figures == {"read": 1200, "inserted": 1200, "updated": 0, "unchanged": 0,
                       "removed": 0, "rejected": 0, "warnings": 0}  # fmt: skip
    # the progress bars are gone, the link count is a line of its own
    assert [line for line in lines if line.startswith("links:")] == ["links: +0 ~0 -0"], lines
    assert not any("reading" in line or "indexing" in line for line in lines), lines
    # the table a narrow sample prints, and the time after it, each on their own line
    lines = _in_terminal(columns, "sample", "--out", str(tmp_path / "sample"), env=env)
    assert re.fullmatch(r"done in \d+\.\ds", lines[-1]), lines
    schools = len(json.loads((tmp_path / "sample" / "school.geojson").read_bytes())["features"])
    assert f"rows  {schools:,}" in [line.strip() for line in lines], lines


def test_log_keeps_each_message_on_its_line(fresh_db: str, tmp_path: Path) -> None:
    path = _toilets_csv(tmp_path / "toilets.csv", 50)
    done = run_cli(
        fresh_db,
        "ingest",
        str(path),
        "--layer",
        "toilet",
        "--mapping",
        _mapping(tmp_path),
        COLUMNS="80",
    )
    assert done.returncode == 0, done.stderr
    assert _figures(done.stdout)["inserted"] == 50
    assert done.stderr.splitlines()[-1] == "links: +0 ~0 -0"
