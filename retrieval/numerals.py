"""Chinese numerals: 一 … 九千九百九十九 ↔ int. One helper for the document parser, question
analysis and the meeting forms."""
from __future__ import annotations

import math
from dataclasses import dataclass

CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
CN_UNITS = {"十": 10, "百": 100, "千": 1000}
#: Every character a Chinese numeral may contain.
CN_NUMERAL_CHARS = "零〇一二两三四五六七八九十百千"


def cn_to_int(text: str) -> int:
    """Chinese numeral (一 … 九千九百九十九) to int; raises ValueError if it is not one."""
    if not text or any(ch not in CN_DIGITS and ch not in CN_UNITS for ch in text):
        raise ValueError(text)
    if len(text) > 1 and not any(ch in CN_UNITS for ch in text):
        return int("".join(str(CN_DIGITS[ch]) for ch in text))  # 二〇一九 → 2019
    total, current = 0, 0
    for ch in text:
        if ch in CN_DIGITS:
            current = CN_DIGITS[ch]
        else:
            unit = CN_UNITS[ch]
            total += (current or 1) * unit
            current = 0
    return total + current


def int_to_cn(n: int) -> str:
    """1 → 一, 10 → 十, 21 → 二十一, 105 → 一百零五."""
    digits = "零一二三四五六七八九"
    if n < 10:
        return digits[n]
    if n < 20:
        return "十" + (digits[n - 10] if n > 10 else "")
    if n < 100:
        return digits[n // 10] + "十" + (digits[n % 10] if n % 10 else "")
    rest = n % 100
    head = digits[n // 100] + "百"
    if rest == 0:
        return head
    return head + ("零" + digits[rest] if rest < 10 else int_to_cn(rest) if rest >= 20 else "一" + int_to_cn(rest))


def parse_int(text: str) -> int | None:
    """``12``, ``１２`` or ``十二`` → 12; None when ``text`` is not a whole number."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        return cn_to_int(text)
    except ValueError:
        return None


# --------------------------------------------------------------------------- quantities
import re  # noqa: E402

#: Units and classifiers after which a number is a quantity (longest first).
_UNITS = ("个工作日", "个月", "周岁", "工作日", "学时", "小时", "分钟", "年", "月", "日", "天", "周", "次", "人", "名",
          "岁", "届", "项", "种", "个", "倍", "批", "轮", "级", "条", "章", "家", "所", "期")
_NUM = rf"(?:\d+(?:\.\d+)?|[{CN_NUMERAL_CHARS}]+)"
# 三分之二 / 百分之五十: fractions and percentages in words.
_FRACTION = re.compile(rf"([{CN_NUMERAL_CHARS}\d]+)分之([{CN_NUMERAL_CHARS}\d]+)")
# A number (digits or Chinese) followed by a unit, or a range 三至五人 / 3-5人; not an ordinal (第一次).
_QUANTITY = re.compile(rf"(?<!第)({_NUM})(?:(至|到|-|—|～|~)({_NUM}))?([多余]?)({'|'.join(_UNITS)})")
_BARE_UNIT = {"个", "种", "名", "项", "条", "章", "级", "所", "家", "期", "批", "轮"}
# Words where a numeral and a unit-like character only look like a quantity.
_NOT_QUANTITY = ("一个", "一些", "一次性", "一年一度", "一届一", "一月一", "一周一", "统一", "唯一", "之一", "一级")


def _as_int(text: str) -> str | None:
    value = parse_int(text)
    if value is None:
        try:
            return str(float(text)).rstrip("0").rstrip(".")
        except ValueError:
            return None
    return str(value)


def normalize_quantities(text: str) -> str:
    """Write numbers inside quantities as digits, for matching (never for display).

    ``每季度召开一次`` → ``每季度召开1次``; ``三个月`` → ``3个月``; ``十八周岁`` → ``18周岁``;
    ``三分之二`` → ``2/3``; ``百分之五十`` → ``50%``; ``三至五人`` → ``3至5人``. Ordinals (第一次),
    and words such as 一般, 统一, 之一, 一个 stay as they are.
    """
    def fraction(m: re.Match[str]) -> str:
        den, num = _as_int(m.group(1)), _as_int(m.group(2))
        if den is None or num is None:
            return m.group(0)
        return f"{num}%" if den == "100" else f"{num}/{den}"

    def quantity(m: re.Match[str]) -> str:
        whole = m.group(0)
        start = m.start()
        if any(text[max(0, start - 1): start + len(w)].find(w) >= 0 for w in _NOT_QUANTITY if w[0] == whole[0]):
            return whole
        first, sep, second, about, unit = m.group(1), m.group(2), m.group(3), m.group(4), m.group(5)
        if unit in _BARE_UNIT and first in ("一", "两") and not sep:
            return whole  # 一个 / 一种 / 两项 are as often words as quantities; keep
        a = _as_int(first)
        b = _as_int(second) if second else None
        if a is None or (second and b is None):
            return whole
        return f"{a}{sep}{b}{about}{unit}" if sep else f"{a}{about}{unit}"

    text = _FRACTION.sub(fraction, text)
    return _QUANTITY.sub(quantity, text)


_QTERM = re.compile(r"(\d+(?:\.\d+)?(?:[至到\-—～~]\d+)?)(个工作日|工作日|个月|周岁|岁|学时|小时|分钟|[年月日天周次人名届项种个倍批轮级条章家所期])|(\d+/\d+|\d+%)")
_UNIT_ALIASES = {"周岁": "岁", "工作日": "个工作日", "日": "天"}


def quantity_terms(text: str) -> list[str]:
    """Quantities of an already :func:`normalize_quantities`-ed text as search terms:
    ``每季度召开1次，不少于3个月`` → ``["~1次", "~3个月"]``."""
    out = []
    for m in _QTERM.finditer(text):
        if m.group(3):
            out.append("~" + m.group(3))
        else:
            out.append("~" + m.group(1) + _UNIT_ALIASES.get(m.group(2), m.group(2)))
    return out


# --------------------------------------------------------------------------- head counts
#: A bound on a number of people: 50人以上 / 100人以下 / 不足7人 / 不超过7人 / 超过3名.
_BOUND = re.compile(r"(不足|少于|不满|不超过|超过|多于)?(\d+)[人名](以上|以下)?")
#: A head count in a question: 60个党员 / 6个正式党员 / 7名党员 / 30人.
_COUNT = re.compile(r"(\d+)(?:个|名)?(?:正式|预备)?(?:党员|人)")


@dataclass(frozen=True)
class CountRange:
    """The head counts a clause of a rule applies to (both ends included)."""

    low: float
    high: float
    closed: bool  # both ends stated (50人以上、100人以下), not just one


def count_ranges(text: str) -> tuple[CountRange, ...]:
    """The ranges of head counts the clauses of a :func:`normalize_quantities`-ed text state:
    ``机关党员50人以上、100人以下的`` → 50..100; ``正式党员不足7人的`` → 0..6."""
    out = []
    for clause in re.split(r"[，。；：,;\n]", text):
        low = high = None
        for m in _BOUND.finditer(clause):
            before, n, after = m.group(1), float(m.group(2)), m.group(3)
            if after == "以上" or before in ("超过", "多于"):
                low = n if after == "以上" else n + 1
            elif after == "以下" or before == "不超过":
                high = n
            elif before in ("不足", "少于", "不满"):
                high = n - 1
        if low is not None or high is not None:
            out.append(CountRange(low if low is not None else 0.0, high if high is not None else math.inf,
                                  low is not None and high is not None))
    return tuple(out)


def head_counts(text: str) -> tuple[float, ...]:
    """Numbers of people a :func:`normalize_quantities`-ed question states (有60个党员)."""
    return tuple(float(m.group(1)) for m in _COUNT.finditer(text))


def count_fit(counts: tuple[float, ...], ranges: tuple[CountRange, ...]) -> float:
    """How well the stated head counts fall in a rule's ranges (the best over counts and ranges):
    1 inside a range with both ends; inside an open one, how close its bound is to the count (a
    rule for 100人以上 decides 120 members, one for 3人以上 hardly); 0 outside all."""
    best = 0.0
    for n in counts:
        for r in ranges:
            if n <= 0 or not r.low <= n <= r.high:
                continue
            best = max(best, 1.0 if r.closed else (r.low / n if math.isinf(r.high) else n / r.high))
    return best
