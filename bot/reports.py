"""Chinese reports about the corpus: what an ingest changed, and what is indexed."""
from __future__ import annotations

from retrieval.index import IngestReport
from retrieval.search import LoadedIndex


def format_ingest_report(report: IngestReport, unresolved: list[str] | None = None) -> str:
    """The final report of an ingest or /reindex (after the new index is serving)."""
    lines = [f"索引更新完成（版本 {report.version}，用时 {report.seconds:.1f} 秒），现已启用。"]
    lines.append(f"共 {len(report.documents)} 个文件、{report.articles} 条条文（新计算向量 {report.embedded} 段）。")
    if report.added:
        lines.append("新增：" + "；".join(f"《{t}》" for t in report.added))
    if report.changed:
        lines.append("更新：" + "；".join(f"《{t}》" for t in report.changed))
    if report.removed:
        lines.append("已删除（不再引用）：" + "；".join(f"《{t}》" for t in report.removed))
    if not (report.added or report.changed or report.removed):
        lines.append("文件内容没有变化。")
    for doc in report.documents:
        lines.append(f"  · 《{doc['title']}》 {doc['articles']} 条（{doc['source']}）")
    if report.errors:
        lines.append(f"以下 {len(report.errors)} 个文件无法读取，未编入索引：")
        lines.extend(f"  ✗ {e.file}：{e.reason}" for e in report.errors)
    if unresolved:
        lines.append("以下引用在新索引中找不到对应条文，请检查：")
        lines.extend(f"  ! {u}" for u in unresolved)
    return "\n".join(lines)


def format_corpus(index: LoadedIndex) -> str:
    """`/corpus`: the indexed documents with article counts, edition dates and version time."""
    created = index.manifest.get("created_at", "")[:19].replace("T", " ")
    lines = [f"当前索引版本 {index.version}（建立于 {created} UTC），共 {len(index.documents())} 个文件："]
    for d in index.documents():
        status = "（旧版）" if d.get("status") == "superseded" else ""
        lines.append(f"· 《{d['title']}》{status} {d['articles']} 条，版本日期 {d.get('date') or '未知'}")
    return "\n".join(lines)
