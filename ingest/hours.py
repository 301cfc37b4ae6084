"""Opening hours as Chinese sources write them → OSM ``opening_hours`` expressions.

Map vendors' POI exports, service-hall notices and clinic listings write
"周一至周五 08:30-12:00，14:00-18:00（法定节假日除外）" where OSM writes
"Mo-Fr 08:30-12:00,14:00-18:00; PH off". The guarantee: `normalise_hours` returns an expression
that ``opening_hours.validate`` accepts, or None; it never guesses. It is kept by construction:
the text is folded (NFKC, the Traditional characters of the vocabulary), cut into tokens by
longest match against the word tables below and one time pattern, read by a small
recursive-descent parser into rules, written as OSM and validated once more. Text that is not
understood makes the whole value unclear, except a remark in brackets, which is dropped and
named in the note. Closures are written after the hours they close (OSM: later rules win).
"""

from __future__ import annotations

import argparse
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum, auto
from pathlib import Path

import opening_hours

#: longer text is no opening hours; refused before any work
MAX_CHARS = 500
WEEK = ("Mo", "Tu", "We", "Th", "Fr", "Sa", "Su")
EVERY_DAY = frozenset(range(7))
MINUTES_PER_DAY = 24 * 60
#: the end of an open-ended interval (8:00起 → 08:00+)
OPEN = -1


@dataclass(frozen=True)
class NormalisedHours:
    """An OSM opening_hours expression (None when unclear) and what was left out or unclear."""

    expression: str | None
    note: str | None = None


class Kind(Enum):
    """What a token is to the parser."""

    DAYS = auto()  # 周一, 工作日, 周末, 每天: a set of weekdays
    DAY_CHAR = auto()  # 五 in 周一至五: a weekday only right after another
    HOLIDAY = auto()  # 节假日 → PH
    POSTFIX = auto()  # (周一至周五) after the hours it selects
    RANGE = auto()  # 至, 到, -, ~, —
    TIME = auto()  # 8:30, 8点半, 8时30分, 8 (bare)
    PERIOD = auto()  # 上午, 下午: how the 12-hour times after it are read
    ALL_DAY = auto()  # 24小时, 全天
    OFF = auto()  # 闭馆, 休息
    EXCEPT = auto()  # 除外, 除…外: the days named are closed
    BREAK = auto()  # 午休: the interval after it is cut out of the hours
    AS_USUAL = auto()  # 照常: holidays keep the weekday hours, nothing to write
    OPEN_END = auto()  # 起, 开始: 8:00起 is open from 8:00, the end not said (OSM 08:00+)
    EXTEND = auto()  # 延长至: the days named keep the hours before, to a later end
    CLEANING = auto()  # 消毒, 保洁 after hours: closed then (周一8:00-9:00消毒)
    SKIP = auto()  # separators and words that carry nothing ("营业时间", "，")


@dataclass(frozen=True)
class Token:
    """One word of an opening-hours text."""

    kind: Kind
    days: frozenset[int] = frozenset()
    holiday: bool = False
    hour: int = 0
    minute: int = 0
    bare: bool = False  # a plain number: 8 in 8-17点, 5 in 周1-5
    shift: frozenset[int] = frozenset()  # PERIOD: hours read as hour + 12


# --- the tables ----------------------------------------------------------------------------

DAY_PREFIXES = ("周", "星期", "礼拜")
DAY_NUMERALS = {"一": 0, "二": 1, "三": 2, "四": 3, "五": 4, "六": 5, "日": 6, "天": 6}
DAY_SETS: dict[str, frozenset[int]] = {
    **dict.fromkeys(("工作日", "平日"), frozenset(range(5))),
    **dict.fromkeys(("周末", "双休日"), frozenset({5, 6})),
    **dict.fromkeys(("每天", "每日", "天天", "全周", "全年", "全年无休", "365天"), EVERY_DAY),
}
HOLIDAY_WORDS = (
    "节假日", "法定节假日", "法定假日", "法定节日", "国家法定节假日", "法定休息日", "节日",
    "公众假期", "公众假日", "国定假日",
)  # fmt: skip
#: after NFKC: ～ and the non-breaking hyphen are ~ and ‐ already
RANGE_WORDS = ("至", "到", "-", "~", "—", "–", "―", "‐", "‒", "−", "〜", "——", "--")
SEPARATOR_WORDS = (" ", ",", "、", "/", ";", ":", ".", "。", "|", "\n", "\r", "\t", "和", "及",
                   "与", "以及", "&", "+", "或")  # fmt: skip
FILLER_WORDS = (
    "营业时间", "开放时间", "办公时间", "工作时间", "服务时间", "门诊时间", "受理时间", "开馆时间",
    "营业", "开放", "办公", "时间", "门诊", "接诊", "对外", "服务", "窗口", "期间", "每", "逢", "每逢",
    "次日", "翌日", "第二天", "均", "为", "是", "开门", "开馆", "上班", "正常", "一般",
    "中午不休息", "中午不休", "午间不休", "午休不休息", "中午照常",
)  # fmt: skip
PERIOD_WORDS: dict[str, frozenset[int]] = {
    **dict.fromkeys(("上午", "早上", "早晨", "清晨", "凌晨", "早间", "早"), frozenset()),
    **dict.fromkeys(("中午", "午间", "正午"), frozenset(range(1, 4))),
    **dict.fromkeys(("下午", "午后"), frozenset(range(1, 12))),
    # 晚上12点 is midnight at the end of the day: 24:00
    **dict.fromkeys(
        ("晚上", "晚", "傍晚", "夜间", "夜晚", "晚间", "夜里"), frozenset(range(1, 13))
    ),
}
ALL_DAY_WORDS = tuple(
    f"{prefix}{hours}"
    for prefix in ("", "7x", "7*", "7×", "全天")
    for hours in ("24小时", "24h", "二十四小时")
) + ("全天", "全天候", "全日", "不打烊", "不间断")
OFF_WORDS = (
    "闭馆", "休馆", "休息", "关闭", "不开放", "不对外开放", "闭园", "休园", "停诊", "休诊",
    "不营业", "不办公", "停止办公", "关门", "闭店", "店休", "公休", "歇业", "休",
)  # fmt: skip
#: closed at the hours just said (a toilet's cleaning); 休息 there could as well be the hours
CLEANING_WORDS = ("消毒", "清洁", "保洁", "清扫")
EXCEPT_WORDS = ("除外", "除", "外")
BREAK_WORDS = ("午休", "午休时间", "中午休息", "午间休息", "午饭时间", "午餐时间")
OPEN_END_WORDS = ("起", "开始")
EXTEND_WORDS = ("延长至", "延长到", "延至", "延到")
AS_USUAL_WORDS = ("照常", "照常营业", "照常开放", "正常营业", "正常开放", "不休息", "不休", "无休")

#: Traditional spellings of the vocabulary's characters (a test checks them against OpenCC)
TRADITIONAL = str.maketrans(
    "週禮節開時點鐘閉館營業無診辦對間關門務眾衆國後雙園體裏裡與爲為斷飯長潔掃",
    "周礼节开时点钟闭馆营业无诊办对间关门务众众国后双园体里里与为为断饭长洁扫",
)


def _word_table() -> dict[str, Token]:
    """Every surface form the tokenizer knows, with its token."""
    words: dict[str, Token] = {}
    for prefix in DAY_PREFIXES:
        for numeral, day in [*DAY_NUMERALS.items(), *((str(d + 1), d) for d in range(7))]:
            words[prefix + numeral] = Token(Kind.DAYS, days=frozenset({day}))
    words |= {
        char: Token(Kind.DAY_CHAR, days=frozenset({day})) for char, day in DAY_NUMERALS.items()
    }
    words |= {word: Token(Kind.DAYS, days=days) for word, days in DAY_SETS.items()}
    words |= {word: Token(Kind.PERIOD, shift=shift) for word, shift in PERIOD_WORDS.items()}
    for kind, surfaces in (
        (Kind.HOLIDAY, HOLIDAY_WORDS), (Kind.RANGE, RANGE_WORDS), (Kind.SKIP, SEPARATOR_WORDS),
        (Kind.SKIP, FILLER_WORDS), (Kind.ALL_DAY, ALL_DAY_WORDS), (Kind.OFF, OFF_WORDS),
        (Kind.EXCEPT, EXCEPT_WORDS), (Kind.AS_USUAL, AS_USUAL_WORDS), (Kind.BREAK, BREAK_WORDS),
        (Kind.OPEN_END, OPEN_END_WORDS), (Kind.EXTEND, EXTEND_WORDS),
        (Kind.CLEANING, CLEANING_WORDS),
    ):  # fmt: skip
        words |= dict.fromkeys(surfaces, Token(kind))
    return words


WORDS = _word_table()
# alternatives are tried in order: longest first makes the first match the longest
_WORD_PATTERN = re.compile("|".join(map(re.escape, sorted(WORDS, key=len, reverse=True))))
_CHINESE_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6,
                   "七": 7, "八": 8, "九": 9}  # fmt: skip
_TIME_PATTERN = re.compile(
    r"(?P<hour>[0-9]{1,2}|(?P<chinese>[零一二两三四五六七八九十]{1,3})(?=[点时]))"
    r"(?:[:.](?P<minute>[0-9]{2})(?::00)?分?|[点时](?:(?P<half>半)|(?P<minutes>[0-9]{1,2})分?|整|钟)?)?"
)
_CLAUSE = re.compile(r"[,;]")
_BRACKETS = re.compile(r"[(\[【〔]([^()\[\]【】〔〕]*)[)\]】〕]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")  # and lone surrogates


class _Unclear(ValueError):
    """Text the normaliser does not understand; the message says which."""


# --- tokens --------------------------------------------------------------------------------


def _chinese_number(text: str) -> int:
    """一 → 1, 十 → 10, 十二 → 12, 二十 → 20."""
    tens, ten, ones = text.partition("十")
    if not ten:
        if len(text) != 1:
            raise _Unclear(f"not a number: {text}")
        return _CHINESE_DIGITS[text]
    if len(tens) > 1 or len(ones) > 1:
        raise _Unclear(f"not a number: {text}")
    return _CHINESE_DIGITS.get(tens, 1) * 10 + _CHINESE_DIGITS.get(ones, 0)


def _time_token(match: re.Match[str]) -> Token:
    """A TIME token from a match of `_TIME_PATTERN`."""
    chinese = match["chinese"]
    hour = _chinese_number(chinese) if chinese else int(match["hour"])
    minute = 30 if match["half"] else int(match["minute"] or match["minutes"] or 0)
    return Token(Kind.TIME, hour=hour, minute=minute, bare=match.end() == match.end("hour"))


def _next_token(text: str, pos: int) -> tuple[Token, int]:
    """The longest token at `pos` and where it ends."""
    word = _WORD_PATTERN.match(text, pos)
    time = _TIME_PATTERN.match(text, pos)
    if time is not None and (word is None or time.end() > word.end()):
        return _time_token(time), time.end()
    if word is not None:
        return WORDS[word.group()], word.end()
    raise _Unclear(f"not understood: {text[pos : pos + 12]}")


def _tokens(text: str) -> list[Token]:
    """The tokens of a text without brackets; separators and filler words left out."""
    text = text.casefold()
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        token, pos = _next_token(text, pos)
        if token.kind is not Kind.SKIP:
            tokens.append(token)
    return tokens


# --- rules ---------------------------------------------------------------------------------


@dataclass
class _Rule:
    """One OSM rule being read: selector (weekdays, PH) and body (hours, off, all day …)."""

    days: set[int] = field(default_factory=set)
    holiday: bool = False
    intervals: list[tuple[int, int]] = field(default_factory=list)
    body: Kind | None = None  # TIME (intervals), ALL_DAY, OFF, EXCEPT, AS_USUAL

    @property
    def selected(self) -> bool:
        """Whether the rule names its days."""
        return bool(self.days) or self.holiday


def _weekday(token: Token | None) -> int | None:
    """The one weekday a token can end a day range with (周一至五, 周1-5), else None."""
    if token is None:
        return None
    if token.kind in (Kind.DAYS, Kind.DAY_CHAR) and len(token.days) == 1:
        return next(iter(token.days))
    if token.kind is Kind.TIME and token.bare and 1 <= token.hour <= 7:
        return token.hour - 1
    return None


def _interval(
    start: Token, end: Token, shift: tuple[frozenset[int], frozenset[int]]
) -> tuple[int, int]:
    """Minutes (start, end) of a time interval; end 00:00 is 24:00; checked."""
    minutes = []
    for token, hours in zip((start, end), shift, strict=True):
        hour = token.hour + 12 if token.hour in hours else token.hour
        if token.minute > 59 or hour > 24 or (hour == 24 and token.minute):
            raise _Unclear(f"not a time: {token.hour}:{token.minute:02d}")
        minutes.append(hour * 60 + token.minute)
    first, last = minutes[0], minutes[1] or MINUTES_PER_DAY
    if start is end:  # the opening of an open-ended interval: only its start is checked
        last = OPEN
    if first >= MINUTES_PER_DAY or first == last:
        raise _Unclear("an empty or impossible time interval")
    return first, last


def _without(intervals: list[tuple[int, int]], gap: tuple[int, int]) -> list[tuple[int, int]]:
    """Intervals with a break cut out; the break must lie inside one of them."""
    for index, (start, end) in enumerate(intervals):
        if start < gap[0] < gap[1] < end:
            return [*intervals[:index], (start, gap[0]), (gap[1], end), *intervals[index + 1 :]]
    raise _Unclear("a break outside the hours")


class _Parser:
    """Tokens → rules. rule := 除? selector? body? (postfix days)?; body := off | 24h | times."""

    def __init__(self, tokens: Sequence[Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.shift: frozenset[int] = frozenset()
        self.previous: _Rule | None = None  # the last rule with hours (延长至 extends them)
        self.closures: list[_Rule] = []  # 24小时，6:00-7:00保洁: a rule the body gave as well

    def peek(self, offset: int = 0) -> Token | None:
        """The token `offset` ahead, None past the end."""
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self, *kinds: Kind) -> Token | None:
        """The next token when it is of one of `kinds` (consumed), else None."""
        token = self.peek()
        if token is None or token.kind not in kinds:
            return None
        self.pos += 1
        return token

    def rules(self) -> list[_Rule]:
        """All rules of the tokens."""
        rules = []
        while self.peek() is not None:
            start = self.pos
            rules.append(self.rule())
            if rules[-1].body is Kind.TIME:
                self.previous = rules[-1]
            rules += self.closures
            self.closures = []
            if self.pos == start:
                raise _Unclear(
                    f"not understood: a {self.tokens[start].kind.name.lower()} word here"
                )
        return rules

    def rule(self) -> _Rule:
        """One rule."""
        rule = _Rule()
        self.shift = frozenset()
        excepted = self.take(Kind.EXCEPT) is not None  # 除周一外 …
        self.selector(rule)
        if excepted:
            self.take(Kind.EXCEPT)  # the 外 of 除周一外
            rule.body = Kind.EXCEPT
            return rule
        if rule.selected and self.take(Kind.EXTEND) is not None:
            self.extend(rule)
            return rule
        self.body(rule)
        postfix = self.take(Kind.POSTFIX) if rule.body and not rule.selected else None
        if postfix is not None:  # 9:00-17:00（周一至周五）
            rule.days, rule.holiday = set(postfix.days), postfix.holiday
        return rule

    def selector(self, rule: _Rule) -> None:
        """Weekdays and holidays: 周一至周五、周六 及节假日."""
        kinds = (Kind.DAYS, Kind.DAY_CHAR, Kind.HOLIDAY, Kind.POSTFIX)
        while (token := self.take(*kinds)) is not None:
            if token.kind is Kind.DAY_CHAR and not rule.days:
                raise _Unclear("a weekday numeral without 周/星期")
            rule.holiday |= token.holiday or token.kind is Kind.HOLIDAY
            rule.days |= self.day_range(token)

    def day_range(self, first: Token) -> frozenset[int]:
        """The days of `first`, or of the range it starts (周一至周五, 周五至周一)."""
        start, end = _weekday(first), _weekday(self.peek(1))
        following = self.peek()
        if start is None or end is None or following is None or following.kind is not Kind.RANGE:
            return first.days
        self.pos += 2
        return frozenset((start + i) % 7 for i in range((end - start) % 7 + 1))

    def body(self, rule: _Rule) -> None:
        """What the rule says of its days: closed, all day, or time intervals."""
        token = self.take(Kind.OFF, Kind.EXCEPT, Kind.AS_USUAL, Kind.ALL_DAY)
        all_day = token is not None and token.kind is Kind.ALL_DAY
        if token is not None:
            rule.body = token.kind
            if token.kind is not Kind.ALL_DAY:
                return
            while self.take(Kind.ALL_DAY):
                pass  # 全天 24小时; hours after 全天 (全天 8:00-20:00) are the hours
        while (interval := self.interval()) is not None:
            rule.intervals.append(interval)
            rule.body = Kind.TIME
            self.breaks(rule)
        if rule.body is Kind.TIME:
            self.take(Kind.AS_USUAL)  # "9:00-17:00 无休": the hours hold every day
            if self.take(Kind.CLEANING) is not None:
                # 周一8:00-9:00消毒: closed at those hours of those days
                days = rule.days or (set() if rule.holiday else set(EVERY_DAY))
                closure = _Rule(set(days), rule.holiday, rule.intervals, Kind.OFF)
                if all_day:  # 24小时，6:00-7:00保洁: open all day but then
                    rule.intervals, rule.body = [], Kind.ALL_DAY
                    self.closures.append(closure)
                else:
                    rule.days, rule.intervals, rule.body = closure.days, closure.intervals, Kind.OFF

    def extend(self, rule: _Rule) -> None:
        """周五、周六延长至23:00: the days keep the hours before, their last one ending later."""
        end, shift = self.time()
        if end is None or self.previous is None:
            raise _Unclear("extended without saying to when, or from which hours")
        *kept, (start, _) = self.previous.intervals
        opening = Token(Kind.TIME, hour=start // 60, minute=start % 60)
        rule.intervals = [*kept, _interval(opening, end, (frozenset(), shift))]
        rule.body = Kind.TIME

    def breaks(self, rule: _Rule) -> None:
        """Cut breaks out of the rule's hours: 午休12:00-13:30, 12:00-13:30午休 or …休息."""
        while True:
            if self.take(Kind.BREAK) is not None:
                gap = self.interval()
                if gap is None:
                    raise _Unclear("a break without its times")
            elif len(rule.intervals) > 1 and self.take(Kind.BREAK, Kind.OFF) is not None:
                gap = rule.intervals.pop()
            else:
                return
            rule.intervals = _without(rule.intervals, gap)

    def interval(self) -> tuple[int, int] | None:
        """One time interval, reading 上午/下午 before either end; None when none follows."""
        start, start_shift = self.time()
        if start is None:
            return None
        if self.take(Kind.OPEN_END) is not None:
            return _interval(start, start, (start_shift, start_shift))[0], OPEN
        if self.take(Kind.RANGE) is None:
            raise _Unclear("a time without an end")
        end, end_shift = self.time()
        if end is None:
            raise _Unclear("a time range without an end")
        return _interval(start, end, (start_shift, end_shift))

    def time(self) -> tuple[Token | None, frozenset[int]]:
        """The next time and the hours its period (上午, 下午) shifts; (None, …) if no time."""
        start, shift = self.pos, self.shift
        while (period := self.take(Kind.PERIOD)) is not None:
            shift = period.shift
        token = self.take(Kind.TIME)
        if token is None:
            self.pos = start
            return None, shift
        self.shift = shift
        return token, shift


# --- from rules to OSM ---------------------------------------------------------------------


def _settle(rules: list[_Rule], notes: list[str]) -> list[_Rule]:
    """Rules as OSM can say them: postfix days joined, 除外 and 照常 resolved, closures last."""
    if len(rules) >= 2 and rules[-1].body is None and not rules[-2].selected and rules[-2].body:
        last = rules.pop()  # "9:00-17:00 周一至周五": days written after the hours
        rules[-1].days, rules[-1].holiday = last.days, last.holiday
    settled: list[_Rule] = []
    for rule in rules:
        if rule.body is Kind.EXCEPT and any(r.body is Kind.OFF for r in settled):
            # 周一闭馆（节假日除外）: open on a holiday Monday, with which hours is not said
            notes.append("an exception to a closure left out")
            continue
        if rule.body is Kind.AS_USUAL and not rule.days and rule.holiday:
            continue  # 节假日照常: PH follows the weekday rules, which OSM does by itself
        if rule.body is None or rule.body is Kind.AS_USUAL:
            raise _Unclear("days without hours")
        if rule.body in (Kind.OFF, Kind.EXCEPT) and not rule.selected:
            raise _Unclear("closed without saying when")
        rule.body = Kind.OFF if rule.body is Kind.EXCEPT else rule.body
        settled.append(rule)
    return sorted(settled, key=lambda r: (r.body is Kind.OFF, r.holiday))


def _day_runs(days: set[int]) -> list[str]:
    """Weekdays as OSM: {0..4} → Mo-Fr, {5, 6} → Sa,Su, all → Mo-Su."""
    runs: list[list[int]] = []
    for day in sorted(days):
        if runs and runs[-1][1] == day - 1:
            runs[-1][1] = day
        else:
            runs.append([day, day])
    parts: list[str] = []
    for first, last in runs:
        parts += (
            [f"{WEEK[first]}-{WEEK[last]}"] if last - first >= 2 else list(WEEK[first : last + 1])
        )
    return parts


def _hhmm(minutes: int) -> str:
    """Minutes after midnight as HH:MM."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _osm_rule(rule: _Rule) -> str:
    """One rule in OSM syntax."""
    selector = ",".join(_day_runs(rule.days) + (["PH"] if rule.holiday else []))
    times = ",".join(
        f"{_hhmm(start)}+" if end == OPEN else f"{_hhmm(start)}-{_hhmm(end)}"
        for start, end in rule.intervals
    )
    if rule.body is Kind.OFF:
        return f"{selector} {times} off".replace("  ", " ")
    if rule.body is Kind.ALL_DAY:
        if not rule.holiday and rule.days in (set(), set(EVERY_DAY)):
            return "24/7"
        return f"{selector} 00:00-24:00"
    return f"{selector} {times}".strip()


# --- text → expression ---------------------------------------------------------------------


def _remark(content: str, extra: list[_Rule], notes: list[str]) -> list[Token]:
    """A bracket's content: tokens read in place, or whole rules set aside in `extra`.

    Clauses (split at , and ;) that are not understood are dropped and named in `notes`.
    """
    tokens: list[Token] = []
    for clause in _CLAUSE.split(content):
        try:
            tokens += _tokens(clause)
        except _Unclear:
            notes.append(f"remark left out: {clause}")
    try:
        rules = _Parser(tokens).rules()
    except _Unclear:
        return tokens  # a part of what is around it: （午休12:00-13:30）
    if len(rules) == 1 and rules[0].body is None:  # (周一至周五): the days of the hours before
        return [Token(Kind.POSTFIX, days=frozenset(rules[0].days), holiday=rules[0].holiday)]
    if rules and all(rule.selected for rule in rules):  # (周一闭馆), (节假日除外)
        extra.extend(rules)
        return []
    return tokens


def _translate(text: str) -> tuple[str, list[str]]:
    """(OSM expression, notes) of a folded text; raises _Unclear."""
    notes: list[str] = []
    extra: list[_Rule] = []
    tokens: list[Token] = []
    pos = 0
    for match in _BRACKETS.finditer(text):
        tokens += _tokens(text[pos : match.start()])
        tokens += _remark(match[1], extra, notes)
        pos = match.end()
    tokens += _tokens(text[pos:])
    rules = _settle(_Parser(tokens).rules() + extra, notes)
    if all(rule.body is Kind.OFF for rule in rules):
        # "周一闭馆" alone: in OSM days no rule names are closed, so "Mo off" would say "never open"
        raise _Unclear("no hours, or only when it is closed")
    return "; ".join(map(_osm_rule, rules)), notes


def _valid(expression: str) -> bool:
    """Whether opening-hours-py accepts an expression."""
    return bool(opening_hours.validate(expression))


def fold(text: str) -> str:
    """Text in the vocabulary's spelling: NFKC (full-width → ASCII), Traditional → Simplified."""
    return unicodedata.normalize("NFKC", text).translate(TRADITIONAL).strip()


def normalise_hours(text: str) -> NormalisedHours:
    """OSM opening_hours of a text in OSM syntax or as Chinese sources write hours."""
    text = text.strip()
    if not text or len(text) > MAX_CHARS or _CONTROL.search(text):
        return NormalisedHours(None, f"empty, control characters or over {MAX_CHARS} characters")
    if _valid(text):
        return NormalisedHours(text)
    folded = fold(text)
    try:
        expression, notes = _translate(folded)
    except _Unclear as unclear:
        # OSM typed with full-width punctuation, tried last: folded, 8:00-12:00；14:00-18:00 is
        # valid OSM that means something else (the second rule replaces the first)
        return NormalisedHours(folded) if _valid(folded) else NormalisedHours(None, str(unclear))
    if not _valid(expression):  # by construction never; the guarantee is checked, not assumed
        return NormalisedHours(None, f"not valid OSM: {expression}")
    return NormalisedHours(expression, "; ".join(notes) or None)


# --- the corpus ----------------------------------------------------------------------------


def read_corpus(path: Path) -> list[tuple[str, str]]:
    """(text, expected expression or "") of a corpus TSV; lines starting with # are comments."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            text, _, expected = line.partition("\t")
            rows.append((text, expected.strip()))
    return rows


def corpus_share(path: Path) -> tuple[int, int, int]:
    """(texts understood, texts, texts normalised exactly as expected) of a corpus TSV."""
    rows = read_corpus(path)
    results = [normalise_hours(text).expression for text, _ in rows]
    understood = sum(result is not None for result in results)
    expected = sum((result or "") == want for result, (_, want) in zip(results, rows, strict=True))
    return understood, len(rows), expected


def main(argv: Sequence[str] | None = None) -> int:
    """Print how much of a corpus the normaliser understands."""
    parser = argparse.ArgumentParser(prog="python -m ingest.hours", description=main.__doc__)
    parser.add_argument("--corpus", type=Path, required=True, help="TSV: text<TAB>expected")
    args = parser.parse_args(argv)
    understood, total, expected = corpus_share(args.corpus)
    print(f"understood {understood} of {total} ({100 * understood / max(total, 1):.1f} %)")
    print(f"as expected {expected} of {total}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
