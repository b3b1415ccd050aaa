"""Parser tests on every seed (counts and labels verified by reading the texts) and on traps."""
from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.documents import parse_file
from retrieval.parse import cn_to_int, int_to_cn, parse_document

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


def _doc(name: str):
    from retrieval.documents import load_metadata

    return parse_file(CORPUS / name, load_metadata(CORPUS).get(name))


def test_chinese_numerals_round_trip():
    for n in [1, 9, 10, 11, 19, 20, 21, 99, 100, 101, 110, 142]:
        assert cn_to_int(int_to_cn(n)) == n
    assert cn_to_int("二十三") == 23
    with pytest.raises(ValueError):
        cn_to_int("二x")


def test_seed_001_liaoning_articles():
    d = _doc("2019_liaoning_jiguan_shiwu_guanliju_dangzu_gongzuo_xize.txt")
    labels = [a.label for a in d.articles]
    assert labels == [f"第{int_to_cn(i)}条" for i in range(1, 42)]
    art = {a.label: a for a in d.articles}
    assert "党组会议一般每月召开1次" in art["第十八条"].text
    assert "前两天通知党组成员" in art["第十八条"].text
    assert "半数以上党组成员到会方可召开" in art["第十九条"].text
    # 项 (一)…(八) stay inside article 27
    assert "（一）党组民主生活会" in art["第二十七条"].text and "（八）" in art["第二十七条"].text
    assert art["第二十九条"].heading.startswith("第六章")
    assert d.meta.title == "中共辽宁省机关事务管理局党组工作细则(试行)"


def test_seed_002_sichuan_outline_items_numbered_across_sections():
    d = _doc("2016_sichuan_jiguan_dangjian_yijian.txt")
    labels = [a.label for a in d.articles]
    assert labels[:3] == ["前言", "一、", "二、（一）"]
    assert "三、（六）" in labels and labels[-1] == "七、（二十三）"
    assert len([lb for lb in labels if "（" in lb]) == 23
    six = next(a for a in d.articles if a.label == "三、（六）")
    assert "支部党员大会每季度至少召开一次" in six.text
    assert six.heading.startswith("三、加强机关基层组织建设")
    # the letter of transmittal is not an item
    assert not any("各市（州）党委" in a.text for a in d.articles if a.label != "前言")


def test_seed_003_henan_items():
    d = _doc("2019_henan_jiguan_dangjian_ruogan_yijian.txt")
    labels = [a.label for a in d.articles]
    assert labels[0] == "前言"
    assert labels[1] == "一、（一）" and labels[-1] == "五、（二十）"
    assert len(labels) == 21
    eighteen = next(a for a in d.articles if a.label == "五、（十八）")
    assert "每半年至少专题研究1次机关党建工作" in eighteen.text


def test_seed_000_points_under_sections():
    d = _doc("1994_zhongyang_jiguan_gongwei_dangzu_zhidao_jiguan_dangwei_yijian.txt")
    labels = [a.label for a in d.articles]
    assert labels == ["前言", "一、", "一、1.", "一、2.", "一、3.", "一、4.", "一、5.",
                      "二、1.", "二、2.", "二、3.", "二、4.", "二、5.", "二、6.", "三、", "四、"]
    assert "每年至少听取机关党委的两次工作汇报" in d.articles[7].text


def test_seed_004_essay_paragraphs_simplified_without_glosses():
    d = _doc("2019_jiguan_dangzuzhi_shi_shenme_gan_shenme.txt")
    assert [a.label for a in d.articles][:2] == ["第1段", "第2段"]
    assert len(d.articles) == 13
    text = "\n".join(a.text for a in d.articles)
    assert "(de)" not in text and "黨" not in text
    assert "机关党组织的核心任务是服务中心、建设队伍" in text
    assert not any("您当前的位置" in a.text or "中共中央政治局召开会议" in a.text for a in d.articles)
    assert d.meta.title != "中共中央政治局召開會議"


def test_extra_documents_complete():
    for name, count in [("2018_zhibu_gongzuo_tiaoli_shixing.txt", 37), ("2019_dangyuan_jiaoyu_guanli_gongzuo_tiaoli.txt", 46)]:
        labels = [a.label for a in _doc(name).articles if a.label.endswith("条")]
        assert labels == [f"第{int_to_cn(i)}条" for i in range(1, count + 1)], name


def test_stray_numbering_does_not_open_units():
    text = "\n".join([
        "第一条 为了规范工作，制定本办法。",
        "第二条 会议应当遵守以下规定：",
        "1.提前通知；",
        "2.按时召开。",
        "一、这一行不是新的单位",
        "第三条 依照本办法",
        "第十条规定的事项，由书记负责。",  # hard wrap: 第十条 is out of sequence
        "第四条 本办法自印发之日起施行。",
    ])
    units = parse_document(text)
    assert [u.label for u in units] == ["第一条", "第二条", "第三条", "第四条"]
    assert "一、这一行不是新的单位" in units[1].text
    assert "第十条规定的事项" in units[2].text


def test_outline_rejects_out_of_sequence_heading():
    text = "\n".join([
        "一、总体要求", "做好工作。", "（一）第一项。内容很多很多。", "（二）第二项。内容很多很多。",
        "三、这不是第二部分", "二、第二部分", "（三）第三项。内容很多很多。",
    ])
    units = parse_document(text)
    assert [u.label for u in units] == ["一、（一）", "一、（二）", "二、（三）"]
    assert "三、这不是第二部分" in units[1].text


def test_editions_named_and_old_ones_superseded(tmp_path):
    from retrieval.documents import mark_superseded

    for year, term in [("2007", "两年或三年"), ("2022", "三年至五年")]:
        (tmp_path / f"dz_{year}.txt").write_text(
            f"标题: 中国共产党章程（{year}年10月通过）\n\n第一条 这是总则部分的条文。\n第二条 这是关于党员的条文。\n第三条 支部委员会每届任期{term}。\n",
            encoding="utf-8")
    docs = [parse_file(tmp_path / "dz_2007.txt"), parse_file(tmp_path / "dz_2022.txt")]
    mark_superseded(docs)
    old, new = docs
    assert old.meta.title == new.meta.title == "中国共产党章程"
    assert old.meta.status == "superseded" and new.meta.status == "current"
    assert new.articles[2].citation == "《中国共产党章程》（2022年版）第三条"
    assert old.articles[2].citation == "《中国共产党章程》（2007年版）第三条"


def test_answer_sentences_follow_the_question_not_the_first_number():
    from retrieval.answer import best_sentences_of

    text = ("党组会议应当有半数以上党组成员到会方可召开。党组成员因故不能参加会议的应当在会前请假，"
            "对会议议题的重要意见可以用书面形式表达。")
    assert "请假" in "".join(best_sentences_of("党组成员有事不能参加党组会怎么办？", text, limit=1))
    assert "半数以上" in "".join(best_sentences_of("党组会议要多少人到会？", text, limit=1))
