"""Chinese numerals: 一 … 九千九百九十九 ↔ int. One helper for the document parser, question
analysis and the meeting forms."""
from __future__ import annotations

CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
CN_UNITS = {"十": 10, "百": 100, "千": 1000}
#: Every character a Chinese numeral may contain.
CN_NUMERAL_CHARS = "零〇一二两三四五六七八九十百千"


def cn_to_int(text: str) -> int:
    """Chinese numeral (一 … 九千九百九十九) to int; raises ValueError if it is not one."""
    if not text or any(ch not in CN_DIGITS and ch not in CN_UNITS for ch in text):
        raise ValueError(text)
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
