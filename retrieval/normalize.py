"""Text normalisation for scraped regulations and for questions.

Width folding (full-width digits and letters to ASCII, half-width Chinese punctuation to the
full-width forms Chinese text uses), traditional → simplified script (OpenCC), removal of pinyin
glosses such as ``的(de)``, and removal of web-page boilerplate lines.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import opencc

_TONES = "a-zāáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜüńňǹḿ"
# 的(de), 和(hé), 為(wèi): a CJK character followed by a parenthesised pinyin syllable.
_PINYIN_GLOSS = re.compile(rf"(?<=[\u3400-\u9fff])[\(（][{_TONES}]{{1,7}}[\)）]")
_CJK = r"\u3400-\u9fff"
_HALF_TO_FULL = {",": "，", ";": "；", ":": "：", "?": "？", "!": "！", "(": "（", ")": "）"}
# Half-width punctuation next to a CJK character (not between digits: 10:30, 1,000 stay).
_HALF_PUNCT = re.compile(rf"(?<=[{_CJK}）”」》\)])([,;:?!])|([,;:?!])(?=[{_CJK}“「《])")
_PARENS = re.compile(rf"\(([^()\n]{{1,30}})\)")
_HEAD_SPACE = re.compile(r"^(第[零〇一二两三四五六七八九十百千]+[条章节编])\s+")
_SPACES = re.compile(r"[ \t\u00a0\u3000\u2002\u2003\u200b\ufeff]+")

# Lines that are web-page furniture rather than regulation text.
_BOILERPLATE = re.compile(
    r"^(您(所在|当前)的?位置|当前位置|首页\s*[>›»]|上一篇|下一篇|上一条|下一条|打印本页|关闭窗口|"
    r"【?字[体号][:：]|【打印|分享到|责任编辑|编辑[:：]|来源[:：]|发布时间[:：]|发布日期[:：]|浏览次数|"
    r"点击[数率]|阅读[数量次]|版权所有|Copyright|©|ICP备|网站地图|联系我们|扫一扫|相关(文章|链接|阅读))",
    re.IGNORECASE,
)
_URL_LINE = re.compile(r"^(https?://\S+)(\s*\(?\d{4}-\d{2}-\d{2}[\d: ]*\)?)?\s*$")
_BULLET = re.compile(r"^[•·●◆■□▪-]\s*")


@lru_cache(maxsize=1)
def _t2s() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


def fold_width(text: str) -> str:
    """NFKC-fold full-width letters, digits and spaces; keep Chinese punctuation full-width."""
    out = []
    for ch in text:
        code = ord(ch)
        if 0xFF10 <= code <= 0xFF19 or 0xFF21 <= code <= 0xFF3A or 0xFF41 <= code <= 0xFF5A:
            out.append(unicodedata.normalize("NFKC", ch))
        elif ch in "\u3000\u00a0":
            out.append(" ")
        elif ch in "．":
            out.append(".")
        else:
            out.append(ch)
    return "".join(out)


def strip_pinyin(text: str) -> str:
    """Remove pinyin glosses after CJK characters: ``的(de)`` → ``的``."""
    return _PINYIN_GLOSS.sub("", text)


def to_simplified(text: str) -> str:
    return _t2s().convert(text)


def chinese_punctuation(text: str) -> str:
    """Half-width punctuation in Chinese context → full-width (，：；（）), digits untouched."""
    text = _HALF_PUNCT.sub(lambda m: _HALF_TO_FULL[m.group(1) or m.group(2)], text)
    # Parentheses around Chinese content: (一) → （一）, (试行) → （试行）
    return _PARENS.sub(
        lambda m: f"（{m.group(1)}）" if re.search(rf"[{_CJK}]", m.group(1)) else m.group(0), text
    )


def normalize_text(text: str) -> str:
    """Normalise a whole document or question: width, script, glosses, punctuation, spaces."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = strip_pinyin(text)
    text = fold_width(text)
    text = to_simplified(text)
    text = chinese_punctuation(text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    # Spaces between two CJK characters are artefacts of scraping or PDF extraction; the space
    # after a leading "第X条" / "第X章" is kept (it separates the label from the text).
    lines = [_HEAD_SPACE.sub("\\1\u2063", line) for line in lines]
    lines = [re.sub(rf"(?<=[{_CJK}，。；：、）（])\s+(?=[{_CJK}（])", "", line) for line in lines]
    return "\n".join(lines).replace("\u2063", " ")


def is_boilerplate(line: str) -> bool:
    """True for navigation, share buttons, copyright and similar web-page lines."""
    s = _BULLET.sub("", line.strip())
    return bool(_BOILERPLATE.match(s) or _URL_LINE.match(s))


def is_mostly_latin(line: str) -> bool:
    """True for lines that are mainly Latin text (e.g. English translation paragraphs)."""
    letters = sum(ch.isascii() and ch.isalpha() for ch in line)
    cjk = sum("\u3400" <= ch <= "\u9fff" for ch in line)
    return letters > 20 and letters > 3 * cjk


def normalize_question(text: str) -> str:
    """Normalise a user question the same way as documents (and drop control characters)."""
    text = "".join(ch for ch in text if ch.isprintable() or ch in "\n\t")
    return normalize_text(text).replace("\n", " ").strip()
