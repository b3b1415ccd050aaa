"""`dangjian` command line: ingest, ask, batch, run, corpus, report.

stdout carries only results (`batch`: one JSON object per input line); progress, logs and
errors go to stderr.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="党建助手 dangjian-bot")
err = Console(stderr=True)


def _settings():
    from bot.settings import Settings

    try:
        return Settings()
    except Exception as exc:  # pydantic ValidationError: show which variable is wrong
        err.print(f"[red]配置错误：{exc}[/red]")
        raise typer.Exit(2) from exc


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "chromadb", "jieba", "telegram.ext", "apscheduler", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _service(settings):
    from bot.app import make_retrieval
    from bot.store.db import DatabaseUnavailable

    try:
        return make_retrieval(settings)
    except DatabaseUnavailable as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(3) from exc
    except ValueError as exc:  # e.g. the LLM prompt templates are missing
        err.print(f"[red]配置错误：{exc}[/red]")
        raise typer.Exit(2) from exc


@app.command()
def ingest(
    paths: Annotated[list[Path] | None, typer.Argument(help="文件或目录；默认 DANGJIAN_CORPUS_DIR")] = None,
    if_missing: Annotated[bool, typer.Option("--if-missing", help="已有索引时什么也不做")] = False,
) -> None:
    """(重新)建立索引：读取 corpus/ 或给定的文件、目录。"""
    _setup_logging()
    logging.getLogger().setLevel(logging.WARNING)
    settings = _settings()
    from bot.reports import format_ingest_report
    from retrieval.index import IngestError

    service = _service(settings)
    if if_missing and service.has_index:
        err.print("索引已存在，跳过（如需重建请运行 dangjian ingest）。")
        raise typer.Exit(0)
    targets = list(paths) if paths else [settings.corpus_dir]
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), console=err, transient=True) as bar:
        task = bar.add_task("读取文件", total=None)

        def progress(stage: str, done: int, total: int, detail: str) -> None:
            label = {"parse": "读取文件", "embed": "计算向量", "write": "写入索引"}.get(stage, stage)
            bar.update(task, description=f"{label} {detail if stage == 'parse' else ''}"[:60], completed=done, total=total)

        try:
            report = service.ingest(targets, progress)
        except IngestError as exc:
            err.print(f"[red]索引失败：{exc}[/red]")
            raise typer.Exit(1) from exc
    print(format_ingest_report(report), file=sys.stderr)
    raise typer.Exit(0 if report.ok else 1)


def _answer_json(answer, latency_ms: float, qid=None) -> dict:
    data = {
        "answer": answer.answer,
        "refused": answer.refused,
        "citations": [c.model_dump() for c in answer.citations],
        "mode": answer.mode,
        "latency_ms": round(latency_ms, 2),
    }
    return {"id": qid, **data} if qid is not None else data


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="问题")],
    as_json: Annotated[bool, typer.Option("--json", help="输出 JSON")] = False,
) -> None:
    """回答一个问题。"""
    _setup_logging()
    logging.getLogger().setLevel(logging.WARNING)
    settings = _settings()
    if not question.strip():
        err.print("[red]问题不能为空。示例：dangjian ask \"党组会议一般多久召开一次？\"[/red]")
        raise typer.Exit(2)
    from retrieval.service import NoIndex

    service = _service(settings)
    try:
        service.index  # noqa: B018 - load before timing
        started = time.perf_counter()
        answer = service.ask(question)
    except NoIndex as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    latency = (time.perf_counter() - started) * 1000
    if as_json:
        typer.echo(json.dumps(_answer_json(answer, latency), ensure_ascii=False))
        return
    from bot.core.format import format_answer

    typer.echo(format_answer(answer))


@app.command()
def batch(file: Annotated[Path, typer.Argument(help="JSONL：每行 {\"id\", \"q\"}")]) -> None:
    """批量回答：每个输入行输出一行 JSON。"""
    _setup_logging()
    logging.getLogger().setLevel(logging.WARNING)
    settings = _settings()
    from retrieval.service import NoIndex

    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        err.print(f"[red]无法读取 {file}：{exc.strerror}[/red]")
        raise typer.Exit(2) from exc
    service = _service(settings)
    try:
        service.index  # noqa: B018
    except NoIndex as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("q"), str):
                raise ValueError("需要 {\"id\": …, \"q\": \"问题\"}")
        except ValueError as exc:
            qid = None
            try:
                qid = json.loads(line).get("id")  # type: ignore[union-attr]
            except Exception:
                pass
            typer.echo(json.dumps({"id": qid, "line": n, "error": f"第{n}行格式错误：{exc}", "answer": "",
                                   "refused": True, "citations": [], "latency_ms": 0.0}, ensure_ascii=False))
            continue
        started = time.perf_counter()
        try:
            answer = service.ask(row["q"])
        except Exception as exc:  # one bad question must not end the run
            logging.getLogger(__name__).exception("question %s failed", row.get("id"))
            typer.echo(json.dumps({"id": row.get("id"), "error": str(exc), "answer": "", "refused": True,
                                   "citations": [], "latency_ms": 0.0}, ensure_ascii=False))
            continue
        latency = (time.perf_counter() - started) * 1000
        typer.echo(json.dumps(_answer_json(answer, latency, row.get("id")), ensure_ascii=False))
        sys.stdout.flush()


@app.command()
def run(
    adapter: Annotated[str | None, typer.Option(help="telegram | wecom | dingtalk | console")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """启动机器人：设置了 Telegram token 时用 Telegram，否则打开终端对话。"""
    _setup_logging(verbose)
    settings = _settings()
    from bot.app import run_bot

    chosen = adapter or ("telegram" if settings.telegram_token else "console")
    raise typer.Exit(run_bot(settings, chosen))


@app.command()
def corpus() -> None:
    """列出当前索引中的文件。"""
    settings = _settings()
    from bot.reports import format_corpus
    from retrieval.service import NoIndex

    service = _service(settings)
    try:
        typer.echo(format_corpus(service.index))
    except NoIndex as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


@app.command()
def report(
    days: Annotated[int, typer.Option("--days", min=1, max=3650, help="统计最近多少天")] = 30,
    csv_file: Annotated[Path | None, typer.Option("--csv", help="把这段时间的提问记录写入 CSV（UTF-8 BOM，Excel 可直接打开）")] = None,
) -> None:
    """提问统计（与聊天中的 /stats 相同）；--csv 导出这段时间的提问记录。"""
    _setup_logging()
    logging.getLogger().setLevel(logging.WARNING)
    settings = _settings()
    from bot.app import open_database
    from bot.core.errors import StorageUnavailable
    from bot.feedback import QuestionStore, build_report, format_report, write_csv

    try:
        store = QuestionStore(open_database(settings), settings.question_log_days)
        result = build_report(store, days)
        rows = store.rows(result.since) if csv_file is not None else []
    except StorageUnavailable as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(3) from exc
    typer.echo(format_report(result, settings.timezone))
    if csv_file is not None:
        try:
            with csv_file.open("w", encoding="utf-8-sig", newline="") as fh:
                write_csv(rows, fh, settings.timezone)
        except OSError as exc:
            err.print(f"[red]无法写入 {csv_file}：{exc.strerror}[/red]")
            raise typer.Exit(2) from exc
        err.print(f"已把 {len(rows)} 条提问记录写入 {csv_file}")


if __name__ == "__main__":  # pragma: no cover
    app()
