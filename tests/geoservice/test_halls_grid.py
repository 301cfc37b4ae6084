"""Properties of the slot grid (hypothesis): hours with breaks, the booking horizon, day
boundaries in Asia/Shanghai; and the small rules (phones, codes, queue groups)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoservice.halls.domain import (
    CODE_LENGTH,
    OffGrid,
    check_start,
    estimate_minutes,
    mask_phone,
    new_code,
    normalise_code,
    normalise_phone,
    queue_groups,
    slot_grid,
    ticket_number,
)

ZONE = "Asia/Shanghai"
SHANGHAI = ZoneInfo(ZONE)
DAYS = ("Mo", "Tu", "We", "Th", "Fr", "Sa", "Su")


@st.composite
def opening_hours(draw: st.DrawFn) -> tuple[str, list[tuple[int, int]], list[int]]:
    """An OSM expression of one or two intervals (a break between) on some weekdays."""
    first_open = draw(st.integers(0, 20 * 60)) // 5 * 5
    first_close = draw(st.integers(first_open + 5, 23 * 60)) // 5 * 5
    intervals = [(first_open, max(first_close, first_open + 5))]
    if draw(st.booleans()) and intervals[0][1] + 10 < 24 * 60 - 5:
        second_open = draw(st.integers(intervals[0][1] + 5, 24 * 60 - 10)) // 5 * 5
        second_open = max(second_open, intervals[0][1] + 5)
        second_close = draw(st.integers(second_open + 5, 24 * 60)) // 5 * 5
        intervals.append((second_open, max(second_close, second_open + 5)))
    days = sorted(draw(st.sets(st.integers(0, 6), min_size=1)))

    def hhmm(m: int) -> str:
        return f"{m // 60:02d}:{m % 60:02d}"

    spans = ",".join(f"{hhmm(a)}-{hhmm(b)}" for a, b in intervals)
    return f"{','.join(DAYS[d] for d in days)} {spans}", intervals, days


@settings(max_examples=300, deadline=None)
@given(
    hours=opening_hours(),
    slot_minutes=st.sampled_from([5, 10, 15, 20, 25, 30, 45, 60, 90]),
    day=st.dates(date(2020, 1, 1), date(2035, 12, 31)),
)
def test_slots_lie_inside_the_open_intervals_of_their_local_day(
    hours: tuple[str, list[tuple[int, int]], list[int]], slot_minutes: int, day: date
) -> None:
    expression, intervals, days = hours
    grid = slot_grid(expression, slot_minutes, day, ZONE)
    if day.weekday() not in days:
        assert grid == ()
        return
    expected = []
    for start, end in intervals:
        at = start
        while at + slot_minutes <= end:
            expected.append(at)
            at += slot_minutes
    got = [s.start.hour * 60 + s.start.minute for s in grid]
    assert got == expected
    for slot in grid:
        assert slot.start.tzinfo is not None and slot.start.utcoffset() == timedelta(hours=8)
        assert slot.end - slot.start == timedelta(minutes=slot_minutes)
        assert slot.start.date() == day  # never across the local midnight
        assert slot.end <= datetime.combine(day + timedelta(days=1), time(), SHANGHAI)
        # nothing in a break: the slot is inside one interval
        minute = slot.start.hour * 60 + slot.start.minute
        assert any(a <= minute and minute + slot_minutes <= b for a, b in intervals)
    starts = [s.start for s in grid]
    assert starts == sorted(set(starts))


@settings(max_examples=300, deadline=None)
@given(
    now=st.datetimes(datetime(2024, 1, 1), datetime(2030, 1, 1), timezones=st.just(SHANGHAI)),
    days_ahead=st.integers(0, 30),
    offset_days=st.integers(-2, 40),
    slot_index=st.integers(0, 100),
)
def test_a_start_is_bookable_exactly_when_on_the_grid_in_the_future_within_the_horizon(
    now: datetime, days_ahead: int, offset_days: int, slot_index: int
) -> None:
    hours = "Mo-Fr 09:00-12:00,14:00-18:00; Sa 09:00-12:00"
    day = now.date() + timedelta(days=offset_days)
    grid = slot_grid(hours, 20, day, ZONE)
    if not grid:
        with pytest.raises(OffGrid):
            check_start(datetime.combine(day, time(10), SHANGHAI), hours=hours, slot_minutes=20,
                        days_ahead=days_ahead, timezone=ZONE, now=now)  # fmt: skip
        return
    slot = grid[slot_index % len(grid)]
    # the same instant written in UTC is the same slot
    for start in (slot.start, slot.start.astimezone(ZoneInfo("UTC"))):
        bookable = slot.start > now and day <= now.date() + timedelta(days=days_ahead)
        if bookable:
            assert check_start(start, hours=hours, slot_minutes=20, days_ahead=days_ahead,
                               timezone=ZONE, now=now) == slot  # fmt: skip
        else:
            with pytest.raises(OffGrid):
                check_start(start, hours=hours, slot_minutes=20, days_ahead=days_ahead,
                            timezone=ZONE, now=now)  # fmt: skip
    # a minute off the grid never is
    with pytest.raises(OffGrid):
        check_start(slot.start + timedelta(minutes=1), hours=hours, slot_minutes=20,
                    days_ahead=days_ahead, timezone=ZONE, now=now)  # fmt: skip


@given(st.integers(0, 23), st.integers(0, 59))
def test_the_local_day_decides_not_utc(hour: int, minute: int) -> None:
    """At 23:30 in Shanghai it is 15:30 UTC the same day; at 01:00 it is the previous UTC day."""
    now = datetime(2026, 3, 2, hour, minute, tzinfo=SHANGHAI)  # a Monday
    # horizon 0 days: only today's (local) slots can be booked
    tomorrow_first = slot_grid("24/7", 30, date(2026, 3, 3), ZONE)[0]
    with pytest.raises(OffGrid, match="horizon"):
        check_start(tomorrow_first.start, hours="24/7", slot_minutes=30, days_ahead=0,
                    timezone=ZONE, now=now)  # fmt: skip
    last_today = slot_grid("24/7", 30, date(2026, 3, 2), ZONE)[-1]
    assert last_today.start.hour == 23 and last_today.start.minute == 30
    if now < last_today.start:
        assert check_start(last_today.start.astimezone(ZoneInfo("UTC")), hours="24/7",
                           slot_minutes=30, days_ahead=0, timezone=ZONE, now=now) == last_today  # fmt: skip


def test_a_start_without_offset_is_refused() -> None:
    with pytest.raises(OffGrid, match="offset"):
        check_start(datetime(2030, 1, 7, 9), hours="24/7", slot_minutes=15, days_ahead=7,
                    timezone=ZONE, now=datetime(2030, 1, 6, tzinfo=SHANGHAI))  # fmt: skip


@given(st.from_regex(r"1[3-9]\d{9}", fullmatch=True))
def test_mobile_numbers_normalise_and_mask(number: str) -> None:
    for written in (number, f"+86{number}", f"86 {number[:3]} {number[3:7]} {number[7:]}",
                    f"{number[:3]}-{number[3:7]}-{number[7:]}"):  # fmt: skip
        assert normalise_phone(written) == number
    assert mask_phone(number) == f"{number[:3]}****{number[-4:]}"


@pytest.mark.parametrize(
    "bad", ["", "12812341234", "1381234123", "138123412345", "abc", "+1 13812341234", "\x00"]
)
def test_other_phone_numbers_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="mobile"):
        normalise_phone(bad)


def test_codes_are_long_random_and_normalise() -> None:
    codes = {new_code() for _ in range(2000)}
    assert len(codes) == 2000 and all(len(c) == CODE_LENGTH >= 8 for c in codes)
    code = next(iter(codes))
    assert normalise_code(f" {code.lower()[:5]}-{code.lower()[5:]} ") == code
    assert normalise_code("0O1IL00000") is None and normalise_code("\x00") is None


def test_queue_groups_and_numbers() -> None:
    groups = queue_groups([("1", ["a", "b"]), ("2", ["a", "b"]), ("3", ["c"]), ("4", ["a"])])
    assert groups == {"a": "A", "b": "A", "c": "B"}
    assert ticket_number("A", 7) == "A007" and ticket_number("B", 1234) == "B1234"
    assert estimate_minutes(0, 12, 2) == 0 and estimate_minutes(3, 10, 2) == 15
