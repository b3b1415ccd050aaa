from retrieval.normalize import (
    chinese_punctuation, fold_width, is_boilerplate, normalize_question, normalize_text, strip_pinyin,
)


def test_pinyin_glosses_removed_but_numbering_kept():
    assert strip_pinyin("機關黨組織的(de)活力和(hé)作用") == "機關黨組織的活力和作用"
    assert strip_pinyin("為(wèi)機關") == "為機關"
    assert strip_pinyin("（一）坚持") == "（一）坚持"
    assert strip_pinyin("(一)坚持 (de)") == "(一)坚持 (de)"  # not after a CJK character


def test_traditional_to_simplified():
    assert normalize_text("黨組會議一般每月召開1次") == "党组会议一般每月召开1次"


def test_full_width_digits_and_letters():
    assert fold_width("每年不少于３２学时，ＡＢ") == "每年不少于32学时，AB"
    assert normalize_question("党员每年学习不少于３２学时？") == "党员每年学习不少于32学时？"


def test_half_width_punctuation_in_chinese_context():
    assert chinese_punctuation("党组会议,一般每月召开;(一)坚持") == "党组会议，一般每月召开；（一）坚持"
    assert chinese_punctuation("10:30 1,000") == "10:30 1,000"


def test_article_head_space_survives_cjk_space_removal():
    out = normalize_text("第二条　中国共产党党员是中国工人阶级的\n上级党 代表大会")
    assert out.split("\n") == ["第二条 中国共产党党员是中国工人阶级的", "上级党代表大会"]


def test_boilerplate_lines():
    for line in ["您当前的位置 : 关于我们 > 党建工作 >", "您所在的位置:首页>头条>文章页", "• 发布时间:2019年10月31日",
                 "上一篇：关于…", "http://www.scjgdj.gov.cn/  (2016-11-25 16:46:31)", "版权所有 © 2019"]:
        assert is_boilerplate(line), line
    assert not is_boilerplate("第十八条 党组会议一般每月召开1次")
