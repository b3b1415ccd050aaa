"""Loader tests: every shipped checklist resolves against articles copied from the real documents,
and every kind of broken citation is reported naming the checklist and the step."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from bot.checklists import Checklist, ChecklistError, load_checklists
from bot.checklists.loader import find_quote
from retrieval.models import Article, ArticleLookup

PROMPTS = Path(__file__).resolve().parent.parent / "prompts" / "checklists"

TITLES = {
    "liaoning-jgswglj-dangzu-xize-2019": "中共辽宁省机关事务管理局党组工作细则(试行)",
    "sichuan-jiguan-dangjian-yijian-2016": "关于进一步加强和改进机关党的建设的意见",
    "henan-jiguan-dangjian-yijian-2019": "中共河南省委关于加强和改进全省机关党的建设的若干意见",
    "zhibu-gongzuo-tiaoli-2018": "中国共产党支部工作条例（试行）",
    "dangyuan-jiaoyu-guanli-tiaoli-2019": "中国共产党党员教育管理工作条例",
}

# Article texts copied verbatim from /work/shared/corpus (seeds 001/002/003, extra/
# zhibu_gongzuo_tiaoli_2018.txt, extra/dangyuan_jiaoyu_guanli_gongzuo_tiaoli_2019.txt); only the
# leading indentation of each paragraph is dropped. Seeds 001 and 002 keep their half-width
# punctuation as scraped, so the loader's width-insensitive matching is exercised.
TEXTS: dict[tuple[str, str], str] = {
    ('liaoning-jgswglj-dangzu-xize-2019', '第二十七条'): (
        "第二十七条  坚持高标准高质量开好党组民主生活会,不断提高党性修养、强化党内监督,进一步严肃党内政治生活。\n"
        "(一)党组民主生活会根据中央确定的主题和省委的要求召开,原则上每年召开一次。\n"
        "(二)党组民主生活会由党组书记主持。列席会议人员由党组书记按照有关规定和要求确定。\n"
        "(三)党组民主生活会召开前,广泛征求意见和建议,并及时向党组成员通报反馈;党组成员充分谈心,沟通情况,交换意见;党组班子和党组成员认真撰写党性分析材料,党组书记主持起草班子集体党性分析材料并经集体研究确定。\n"
        "(四)党组民主生活会召开的时间、主题和内容,提前向省委报告。\n"
        "(五)党组民主生活会上,党组成员开展严肃认真的批评和自我批评。因故缺席的党组成员,应提交书面发言,列入会议记录。会后由主持人或由主持人委托参加会议的其他同志,将会议情况和相关意见转告缺席同志。\n"
        "(六)党组班子和党组成员针对会前和会上查摆出的问题,制定具体整改措施,严肃认真进行整改。\n"
        "(七)党组民主生活会情况和整改措施制定情况,应按照中央和省委的要求,在一定范围内进行通报,自觉接受党员和群众的监督。\n"
        "(八)党组民主生活会情况应按照规定时限向省委作出书面报告。"
    ),
    ('sichuan-jiguan-dangjian-yijian-2016', '三、（六）'): (
        "(六)规范和严格党的组织生活。严格落实“三会一课”制度,突出政治学习教育,突出党性锻炼,突出思想交流,支部党员大会每季度至少召开一次,支部委员会、党小组会一般每月召开一次,基层党组织书记每年讲党课不少于一次,防止表面化、形式化、娱乐化。认真落实党员领导干部双重组织生活制度,党员领导干部要时刻牢记自己第一身份是党员,以普通党员身份带头参加所在党支部或党小组的组织生活,不能用领导班子民主生活会、中心组学习等代替日常组织生活。通过领导干部的示范带动,增强组织生活的思想性和针对性,推动组织生活质量全面提高。坚持民主生活会和组织生活会制度,坚持不懈用好批评和自我批评这个锐利武器,批评和自我批评必须坚持实事求是,讲党性不讲私情、讲真理不讲情面;党员干部必须严于自我剖析,对发现的问题深入剖析原因,认真整改。认真落实主题党日活动,突出一月一主题,丰富党内组织生活内容。认真落实民主评议党员制度,对照合格党员标准和不合格党员的具体表现开展党性分析,把评议结果与评先评优结合起来,对党性不强的党员及时进行批评教育、限期改正。认真落实谈心谈话制度,党组织领导班子成员之间、班子成员与党员之间、党员与党员之间要开展经常性的谈心谈话。认真落实请示报告制度,工作中的重大问题和个人有关事项必须按规定按程序向组织请示报告,对无正当理由不按时报告、不如实报告或隐瞒不报的要严肃处理。"
    ),
    ('henan-jiguan-dangjian-yijian-2019', '三、（十一）'): (
        "（十一）严肃党内政治生活。严格执行新形势下党内政治生活若干准则。“三会一课”要突出政治学习和政治教育，突出党性锻炼。民主生活会和组织生活会要对标“兰考标准”，开出氛围效果；党员干部应当在会上把群众反映、巡视巡察反馈、组织约谈函询、个人需要报告的重大事项和有关问题说清楚。民主评议党员要对照党员标准，联系个人实际进行党性分析。谈心谈话要注重分析党员思想状况和心理状况，做到岗位变动必谈、组织处理必谈、发生家庭变故必谈、发现苗头性问题必谈。主题党日要认真研究确定主题和内容，抓好议定事项的组织落实。坚持和完善重温入党誓词、入党志愿书以及党员过“政治生日”等政治仪式。各级党组织要定期检查党员参加组织生活情况，向全体党员通报，并将党员领导干部参加双重组织生活情况向上级党组织报告。"
    ),
    ('zhibu-gongzuo-tiaoli-2018', '第十五条'): (
        "第十五条 党支部应当严格执行党的组织生活制度，经常、认真、严肃地开展批评和自我批评，增强党内政治生活的政治性、时代性、原则性、战斗性。\n"
        "党员领导干部应当带头参加所在党支部或者党小组组织生活。"
    ),
    ('zhibu-gongzuo-tiaoli-2018', '第十七条'): (
        "第十七条 党支部每年至少召开1次组织生活会，一般安排在第四季度，也可以根据工作需要随时召开。组织生活会一般以党支部党员大会、党支部委员会会议或者党小组会形式召开。\n"
        "组织生活会应当确定主题，会前认真学习，谈心谈话，听取意见；会上查摆问题，开展批评和自我批评，明确整改方向；会后制定整改措施，逐一整改落实。"
    ),
    ('zhibu-gongzuo-tiaoli-2018', '第十八条'): (
        "第十八条 党支部一般每年开展1次民主评议党员，组织党员对照合格党员标准、对照入党誓词，联系个人实际进行党性分析。\n"
        "党支部召开党员大会，按照个人自评、党员互评、民主测评的程序，组织党员进行评议。党员人数较多的党支部，个人自评和党员互评可以在党小组范围内进行。党支部委员会会议或者党员大会根据评议情况和党员日常表现情况，提出评定意见。\n"
        "民主评议党员可以结合组织生活会一并进行。"
    ),
    ('zhibu-gongzuo-tiaoli-2018', '第十九条'): (
        "第十九条 党支部应当经常开展谈心谈话。党支部委员之间、党支部委员和党员之间、党员和党员之间，每年谈心谈话一般不少于1次。谈心谈话应当坦诚相见、交流思想、交换意见、帮助提高。\n"
        "党支部应当注重分析党员思想状况和心理状态。对家庭发生重大变故和出现重大困难、身心健康存在突出问题等情况的党员，党支部书记应当帮助做好心理疏导；对受到处分处置以及有不良反映的党员，党支部书记应当有针对性地做好思想政治工作。"
    ),
    ('dangyuan-jiaoyu-guanli-tiaoli-2019', '第十七条'): (
        "第十七条党支部每年至少召开1次组织生活会，也可以根据工作需要随时召开，一般以党员大会、党支部委员会会议或者党小组会形式进行。"
    ),
    ('dangyuan-jiaoyu-guanli-tiaoli-2019', '第十八条'): (
        "第十八条党支部一般每年开展1次民主评议党员。党支部召开党员大会，按照个人自评、党员互评、民主测评的程序，组织党员进行评议。党支部委员会会议或者党员大会根据评议情况和党员日常表现情况，提出评定意见。\n"
        "民主评议党员可以结合组织生活会一并进行。"
    ),
}

_HALF_TO_FULL = str.maketrans({",": "，", ";": "；", ":": "：", "(": "（", ")": "）"})


def corpus_articles(*, fullwidth: bool = False) -> dict[tuple[str, str], Article]:
    """The articles the shipped checklists cite; ``fullwidth`` mimics the index's normalisation."""
    articles = {}
    for order, ((doc_id, label), text) in enumerate(TEXTS.items()):
        if fullwidth:
            text = text.translate(_HALF_TO_FULL)
        articles[(doc_id, label)] = Article(
            doc_id=doc_id, doc_title=TITLES[doc_id], label=label, text=text,
            source=f"{doc_id}.txt", order=order,
        )
    return articles


def fake_lookup(articles: dict[tuple[str, str], Article] | None = None) -> ArticleLookup:
    table = corpus_articles() if articles is None else articles

    def lookup(doc_id: str, label: str) -> Article | None:
        return table.get((doc_id, label))

    return lookup


def load_shipped(*, fullwidth: bool = False) -> list[Checklist]:
    return load_checklists(PROMPTS, fake_lookup(corpus_articles(fullwidth=fullwidth)))


# Shipped checklists ---------------------------------------------------------------------------
def test_every_shipped_checklist_resolves_and_every_step_is_cited() -> None:
    checklists = load_shipped()
    by_id = {c.id: c for c in checklists}
    assert [c.id for c in checklists][:2] == ["mzshh", "zzshh"]
    assert by_id["mzshh"].title == "民主生活会会前准备"
    assert by_id["zzshh"].title == "组织生活会"
    assert "mzpy" in by_id
    assert sum(1 for c in checklists if c.size >= 5) >= 2
    articles = corpus_articles()
    for checklist in checklists:
        assert checklist.description
        assert checklist.id.isascii() and len(checklist.id) <= 16
        for step in checklist.steps:
            article = articles[(step.doc_id, step.label)]
            assert step.citation == article.citation
            assert step.citation.startswith("《") and step.citation.endswith(step.label)
            assert step.quote and step.quote in article.text  # verbatim from the indexed text
            assert step.text and step.who and step.title


def test_steps_carry_the_expected_rules() -> None:
    by_id = {c.id: c for c in load_shipped()}
    mzshh = by_id["mzshh"]
    assert {s.label for s in mzshh.steps} >= {"第二十七条", "三、（十一）"}
    quotes = " ".join(s.quote for s in mzshh.steps)
    for phrase in ("征求意见", "充分谈心", "提前向省委报告", "批评和自我批评", "整改", "通报", "书面报告"):
        assert phrase in quotes, phrase
    zzshh = by_id["zzshh"]
    assert any(s.label == "第十七条" and "确定主题" in s.quote for s in zzshh.steps)
    assert any(s.label == "第十七条" and "会后制定整改措施" in s.quote for s in zzshh.steps)
    assert [s.meeting_type for s in zzshh.steps if s.meeting_type] == ["组织生活会"]
    assert [s.meeting_type for s in mzshh.steps if s.meeting_type] == ["民主生活会"]
    mzpy = by_id["mzpy"]
    assert any("个人自评、党员互评、民主测评" in s.quote for s in mzpy.steps)


def test_quotes_survive_the_index_normalisation() -> None:
    """The index stores full-width punctuation; the shown quote is taken from the indexed text."""
    half = {c.id: c for c in load_shipped()}
    full = {c.id: c for c in load_shipped(fullwidth=True)}
    step_half, step_full = half["mzshh"].steps[0], full["mzshh"].steps[0]
    assert "," in step_half.quote
    assert "，" in step_full.quote and "," not in step_full.quote
    assert step_full.quote == "党组民主生活会根据中央确定的主题和省委的要求召开，原则上每年召开一次"


def test_find_quote_ignores_width_and_spaces_and_returns_the_article_span() -> None:
    text = "(三)党组民主生活会召开前,广泛征求意见和建议;\n党组成员充分谈心"
    assert find_quote(text, "召开前，广泛征求意见") == "召开前,广泛征求意见"
    assert find_quote(text, "建议；党组成员充分") == "建议;\n党组成员充分"
    assert find_quote(text, "（三）党组") == "(三)党组"
    assert find_quote(text, "民主评议") is None
    assert find_quote(text, "  ") is None


# Broken citations ------------------------------------------------------------------------------
def _write(directory: Path, name: str, data: dict) -> None:
    (directory / name).write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def _step(label: str, quote: str | None = None, doc: str = "zhibu-gongzuo-tiaoli-2018", **extra) -> dict:
    citation = {"doc": doc, "label": label}
    if quote is not None:
        citation["quote"] = quote
    return {"title": f"步骤 {label}", "text": "做一件事", "who": "支部书记", "citation": citation, **extra}


def test_broken_citations_are_all_reported_with_checklist_and_step(tmp_path: Path) -> None:
    _write(tmp_path, "bad.yaml", {
        "id": "badone", "title": "坏清单", "description": "测试", "steps": [
            _step("第十七条", "组织生活会应当确定主题"),  # fine
            _step("第九十九条"),  # unknown label
            _step("第十七条", "每月召开三次组织生活会"),  # quote not in the article
            _step("第一条", doc="no-such-doc"),  # unknown document
        ],
    })
    with pytest.raises(ChecklistError) as info:
        load_checklists(tmp_path, fake_lookup())
    problems = info.value.problems
    assert len(problems) == 3
    assert all("badone" in p for p in problems)
    assert "step 2" in problems[0] and "第九十九条" in problems[0]
    assert "step 3" in problems[1] and "每月召开三次组织生活会" in problems[1]
    assert "step 4" in problems[2] and "no-such-doc" in problems[2]
    assert "badone" in str(info.value)


def test_a_corpus_refresh_that_drops_an_article_breaks_loading_loudly() -> None:
    articles = corpus_articles()
    del articles[("henan-jiguan-dangjian-yijian-2019", "三、（十一）")]
    with pytest.raises(ChecklistError) as info:
        load_checklists(PROMPTS, fake_lookup(articles))
    problems = info.value.problems
    assert any("mzshh" in p and "step 7" in p and "三、（十一）" in p for p in problems)
    assert any("zzshh" in p and "step 10" in p for p in problems)
    assert len(problems) == 2


def test_a_reworded_article_is_reported(tmp_path: Path) -> None:
    articles = corpus_articles()
    key = ("zhibu-gongzuo-tiaoli-2018", "第十七条")
    articles[key] = articles[key].model_copy(update={"text": "第十七条 党支部每年召开组织生活会。"})
    with pytest.raises(ChecklistError) as info:
        load_checklists(PROMPTS, fake_lookup(articles))
    assert all("zzshh" in p for p in info.value.problems)
    assert any("step 1" in p for p in info.value.problems)
    assert any("step 9" in p for p in info.value.problems)


def test_schema_errors_name_file_and_step(tmp_path: Path) -> None:
    step = _step("第十七条")
    del step["who"]
    _write(tmp_path, "a.yaml", {"id": "aaa", "title": "甲", "description": "d", "steps": [_step("第十七条"), step]})
    _write(tmp_path, "b.yaml", {"id": "Bad Id", "title": "乙", "description": "d", "steps": [_step("第十七条")]})
    _write(tmp_path, "c.yaml", {"id": "status", "title": "丙", "description": "d", "steps": [_step("第十七条")]})
    (tmp_path / "d.yaml").write_text("id: [unclosed", encoding="utf-8")
    _write(tmp_path, "e.yaml", {
        "id": "eee", "title": "戊", "description": "d", "steps": [_step("第十七条", meeting_type="组织 生活会")],
    })
    with pytest.raises(ChecklistError) as info:
        load_checklists(tmp_path, fake_lookup())
    text = "\n".join(info.value.problems)
    assert "a.yaml (checklist aaa) step 2: who" in text
    assert "b.yaml" in text and "c.yaml" in text and "d.yaml" in text
    assert "e.yaml (checklist eee) step 1: meeting_type" in text


def test_names_must_be_unique_across_checklists(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", {
        "id": "aaa", "title": "甲清单", "aliases": ["组织生活会"], "description": "d", "steps": [_step("第十七条")],
    })
    _write(tmp_path, "b.yaml", {"id": "bbb", "title": "组织生活会", "description": "d", "steps": [_step("第十七条")]})
    with pytest.raises(ChecklistError) as info:
        load_checklists(tmp_path, fake_lookup())
    assert any("组织生活会" in p and "aaa" in p and "bbb" in p for p in info.value.problems)


def test_lookup_failures_and_missing_directory_are_reported(tmp_path: Path) -> None:
    shutil.copy(PROMPTS / "zzshh.yaml", tmp_path / "zzshh.yaml")

    def exploding(doc_id: str, label: str) -> Article | None:
        raise RuntimeError("index not ready")

    with pytest.raises(ChecklistError) as info:
        load_checklists(tmp_path, exploding)
    assert len(info.value.problems) == 10
    assert "zzshh" in info.value.problems[0] and "index not ready" in info.value.problems[0]
    with pytest.raises(ChecklistError):
        load_checklists(tmp_path / "missing", fake_lookup())


def test_a_step_without_quote_shows_the_whole_article(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", {"id": "aaa", "title": "甲", "description": "d", "steps": [_step("第十五条")]})
    [checklist] = load_checklists(tmp_path, fake_lookup())
    assert checklist.steps[0].quote == TEXTS[("zhibu-gongzuo-tiaoli-2018", "第十五条")]
    assert checklist.steps[0].citation == "《中国共产党支部工作条例（试行）》第十五条"
