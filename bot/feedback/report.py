"""The usage report behind ``/stats`` and ``dangjian report``, and the CSV export of the log.

No user id appears in the report. Unanswered questions are grouped after normalisation (width,
script, case, punctuation and spaces, a leading 请问/您好 and trailing particles such as 吗/呢), so
"党员可以炒股吗？" and "请问 党员可以炒股？" count as one question asked twice.
"""
from __future__ import annotations

import csv
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TextIO
from zoneinfo import ZoneInfo

from bot.feedback import texts
from bot.feedback.store import Logged, QuestionStore, Totals
from bot.feedback.tables import DOWN, UP
from retrieval.normalize import to_simplified

TOP = 10
SHOWN_QUESTION_CHARS = 80
_HEAD = re.compile(r"^(请问一下|请问|请教一下|请教|问一下|你好|您好)+")
_TAIL = re.compile(r"[呢吗啊呀]+$")


def question_key(question: str) -> str:
    """The form under which questions count as the same."""
    text = to_simplified(unicodedata.normalize("NFKC", question)).lower()
    text = "".join(ch for ch in text if ch.isalnum())
    return _TAIL.sub("", _HEAD.sub("", text)) or text


def group_questions(questions: list[str]) -> list[tuple[str, int]]:
    """(the most frequent wording, count) per normalised question, most asked first (ties: first
    asked first)."""
    groups: dict[str, Counter[str]] = {}
    for q in questions:
        groups.setdefault(question_key(q), Counter())[" ".join(q.split())] += 1
    ranked = sorted(groups.values(), key=lambda c: -c.total())  # stable: first asked first
    return [(c.most_common(1)[0][0], c.total()) for c in ranked]


@dataclass(frozen=True)
class Report:
    days: int
    since: datetime
    until: datetime
    retention_days: int
    totals: Totals
    platforms: list[tuple[str, int]]
    unanswered: list[tuple[str, int]]  # (question, count)
    rated_down: list[tuple[str, str | None, int]]  # (question, cited article, count)
    documents: list[tuple[str, int]]  # (document title, answers citing it)


def build_report(store: QuestionStore, days: int) -> Report:
    until = store.clock()
    since = until - timedelta(days=days)
    down: dict[tuple[str, str | None], list] = {}
    for question, citation in store.rated(since, DOWN):
        entry = down.setdefault((question_key(question), citation), [question, citation, 0])
        entry[2] += 1
    rated_down = sorted((tuple(e) for e in down.values()), key=lambda e: -e[2])
    return Report(
        days=days, since=since, until=until, retention_days=store.days, totals=store.totals(since),
        platforms=store.per_platform(since), unanswered=group_questions(store.refused_questions(since))[:TOP],
        rated_down=rated_down[:TOP], documents=store.cited_documents(since, TOP),  # type: ignore[arg-type]
    )


def _short(question: str) -> str:
    question = " ".join(question.split())
    return question if len(question) <= SHOWN_QUESTION_CHARS else question[:SHOWN_QUESTION_CHARS] + "……"


def _share(part: int, whole: int) -> str:
    return f"{part * 100 / whole:.0f}%" if whole else "0%"


def format_report(report: Report, timezone: str) -> str:
    """The report as chat text (Chinese)."""
    if report.retention_days <= 0:
        return texts.LOG_OFF
    tz = ZoneInfo(timezone)
    header = texts.REPORT_HEADER.format(days=report.days, since=f"{report.since.astimezone(tz):%Y-%m-%d}",
                                        until=f"{report.until.astimezone(tz):%Y-%m-%d}")
    if report.days > report.retention_days:
        header += "\n" + texts.REPORT_RETENTION.format(retention=report.retention_days)
    t = report.totals
    if t.questions == 0:
        return header + "\n" + texts.REPORT_EMPTY.format(days=report.days)
    totals = texts.REPORT_TOTALS.format(questions=t.questions, answered=t.answered, refused=t.refused,
                                        answered_share=_share(t.answered, t.questions),
                                        refused_share=_share(t.refused, t.questions))
    platforms = "，".join(f"{texts.PLATFORM_NAMES.get(p, p)} {n} 次" for p, n in report.platforms)
    lines = [header, totals, texts.REPORT_RATINGS.format(up=t.up, down=t.down), texts.REPORT_PLATFORMS + platforms]
    lines += ["", texts.REPORT_UNANSWERED]
    lines += [f"  {i}. {_short(q)}（{n} 次）" for i, (q, n) in enumerate(report.unanswered, 1)] or [texts.REPORT_NONE]
    lines += ["", texts.REPORT_RATED_DOWN]
    lines += [f"  · {_short(q)} → {c or texts.NO_CITATION}" + (f"（{n} 次）" if n > 1 else "")
              for q, c, n in report.rated_down] or [texts.REPORT_NONE]
    lines += ["", texts.REPORT_DOCUMENTS]
    lines += [f"  · 《{d}》 {n} 次" for d, n in report.documents] or [texts.REPORT_NONE]
    return "\n".join(lines)


CSV_HEADER = ["时间", "平台", "会话类型", "用户ID", "问题", "结果", "首要引用", "模式", "耗时毫秒", "评价"]
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str) -> str:
    """Text a spreadsheet shows as text, never runs as a formula."""
    return "'" + value if value.startswith(_FORMULA) else value


def write_csv(rows: list[Logged], out: TextIO, timezone: str) -> None:
    """The log rows as CSV; open ``out`` with ``encoding="utf-8-sig", newline=""`` for Excel."""
    tz = ZoneInfo(timezone)
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for r in rows:
        writer.writerow([
            f"{r.at.astimezone(tz):%Y-%m-%d %H:%M:%S}", r.platform, r.chat_type, _cell(r.user_id),
            _cell(r.question), texts.CSV_REFUSED if r.refused else texts.CSV_ANSWERED, _cell(r.citation or ""),
            r.mode, r.latency_ms,
            {UP: texts.RATING_UP, DOWN: texts.RATING_DOWN}.get(r.rating or "", ""),
        ])
