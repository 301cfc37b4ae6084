"""Replica lag by WAL position on this process's clock, and WAL positions as text."""

from __future__ import annotations

import pytest

from geoservice.db.replicas import LagClock, format_lsn, parse_lsn


def test_wal_positions_parse_and_print_as_postgresql_does() -> None:
    assert parse_lsn("0/0") == 0
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    assert parse_lsn("1/0") > parse_lsn("0/FFFFFFFF")
    for bad in ("", "16", "x/1", "1/", "/1", "123456789/0", "1/2/3"):
        with pytest.raises(ValueError):
            parse_lsn(bad)


def test_lag_is_how_long_ago_the_primary_first_held_what_the_standby_lacks() -> None:
    clock = LagClock(keep_s=30)
    for at, lsn in ((100.0, 10), (101.0, 10), (102.0, 20), (103.0, 30)):
        clock.add(at, lsn)
    assert clock.lag(30, now=103.5) == (0.0, True)  # has everything
    assert clock.lag(10, now=103.5) == (1.5, True)  # lacks what the primary had at 102
    assert clock.lag(25, now=104.0) == (1.0, True)
    # behind even the oldest sample: at least that far behind, but how far is unknown
    lag, exact = clock.lag(5, now=104.0)
    assert lag == 4.0 and not exact


def test_an_idle_primary_never_makes_a_standby_look_behind() -> None:
    clock = LagClock(keep_s=30)
    for second in range(1000):
        clock.add(float(second), 42)
    assert clock.lag(42, now=1000.0) == (0.0, True)
    assert len(clock.samples) <= 32  # old samples are dropped
    assert clock.newest == 42
