#!/usr/bin/env python3
"""`make bench`: retrieval quality and speed (not part of `make test`).

Builds two indexes in scratch data dirs -- the default corpus, and the default corpus plus
../shared/corpus/extra -- then runs `dangjian batch` on each question set and scores it with
../shared/eval/score.py. Prints hit@1/3, MRR, fact-in-answer, refusal rates, latency p50/p95,
ingest seconds and peak RSS.

Question sets:
* default corpus: ../shared/eval/dev.jsonl, dev_peer.jsonl (its questions about documents that
  are only in ../shared/corpus/extra count as misses here),
  and the project's own questions about it
  (tests/data/eval_default.jsonl, eval_peer_default.jsonl and eval_peer2_default.jsonl, the
  latter two written by separate hands in the styles other people use) split in two halves by a hash of the question id:
  ``tune`` (weights and thresholds were chosen on it) and ``holdout`` (never looked at while
  tuning; reported to show the gap);
* default + extra: ../shared/eval/dev_peer.jsonl (written by other people), dev.jsonl, and the
  two halves of tests/data/eval_extra.jsonl + eval_peer_extra.jsonl.

``--keep DIR`` keeps the built indexes in DIR and reuses them on the next run (after a change
to search or answers only); ``--rebuild`` forces a new ingest there.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KEYS = ["questions", "hit@1", "hit@3", "mrr", "answer_has_fact", "false_refusal", "oos_refusal",
        "malformed_citations", "latency_ms_p50", "latency_ms_p95"]


def half_of(qid: str) -> str:
    """The stable half a question id belongs to: "tune" or "holdout"."""
    return "tune" if hashlib.sha1(qid.encode("utf-8")).digest()[0] % 2 == 0 else "holdout"


def split_halves(paths: list[Path], out_dir: Path, name: str) -> list[Path]:
    """Write the questions of ``paths`` as two files, ``NAME.tune.jsonl`` and ``NAME.holdout.jsonl``."""
    rows = [json.loads(line) for path in paths for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    for half in ("tune", "holdout"):
        target = out_dir / f"{name}.{half}.jsonl"
        target.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows
                                  if half_of(str(r["id"])) == half), encoding="utf-8")
        out.append(target)
    return out


def run(args: list[str], env: dict, stdout=None) -> tuple[float, int]:
    """Run a dangjian command; return (seconds, peak RSS MiB of the children so far)."""
    started = time.monotonic()
    proc = subprocess.run([str(BIN / "dangjian"), *args], env=env, stdout=stdout, stderr=subprocess.PIPE, text=True)
    seconds = time.monotonic() - started
    if proc.returncode not in (0, 1):
        sys.exit(f"dangjian {' '.join(args)} failed:\n{proc.stderr}")
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024


def score(shared: Path, gold: Path, answers: Path) -> dict:
    out = subprocess.run([sys.executable, str(shared / "eval" / "score.py"), str(gold), str(answers), "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--keep", type=Path, help="keep (and reuse) the built indexes in this folder")
    parser.add_argument("--rebuild", action="store_true", help="with --keep: ingest again")
    parser.add_argument("--only", help="run only question sets whose name contains this")
    parser.add_argument("--misses", type=int, default=40, help="misses to print per set")
    args = parser.parse_args()
    shared = args.shared.resolve()
    scratch = Path(tempfile.mkdtemp(prefix="dj-bench-"))
    data = REPO / "tests" / "data"
    own_default = split_halves([data / "eval_default.jsonl", data / "eval_peer_default.jsonl",
                                data / "eval_peer2_default.jsonl"], scratch, "own_default")
    own_extra = split_halves([data / "eval_extra.jsonl", data / "eval_peer_extra.jsonl"], scratch, "own_extra")
    dev, peer = shared / "eval" / "dev.jsonl", shared / "eval" / "dev_peer.jsonl"
    configs = {
        "default": ([REPO / "corpus"], [dev, peer, *own_default]),
        "default+extra": ([REPO / "corpus", shared / "corpus" / "extra"], [peer, dev, *own_extra]),
    }
    summary = []
    for name, (paths, sets) in configs.items():
        data = (args.keep / name) if args.keep else scratch / name
        env = {**os.environ, "DANGJIAN_DATA_DIR": str(data), "ANONYMIZED_TELEMETRY": "False"}
        env.pop("DANGJIAN_LLM_BASE_URL", None)
        if args.rebuild or not (data / "index").exists():
            seconds, rss = run(["ingest", *map(str, paths)], env)
            print(f"\n== {name}: ingest {seconds:.1f} s, peak RSS {rss} MiB", flush=True)
        else:
            print(f"\n== {name}: reusing the index in {data}", flush=True)
        for qs in sets:
            label = qs.stem
            if args.only and args.only not in label:
                continue
            answers = scratch / f"{name}.{label}.out.jsonl"
            with open(answers, "w", encoding="utf-8") as fh:
                seconds, rss = run(["batch", str(qs)], env, stdout=fh)
            result = score(shared, qs, answers)
            print(f"-- {label}: batch {seconds:.1f} s, peak RSS {rss} MiB")
            print("   " + "  ".join(f"{k}={result[k]}" for k in KEYS))
            summary.append((name, label, result))
            for miss in result["misses"][: args.misses]:
                print("   miss", *miss)
    print("\n| corpus | question set | n | hit@1 | hit@3 | fact | false refusal | oos refused | p95 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, label, r in summary:
        print(f"| {name} | {label} | {r['questions']}+{r['oos_questions']} | {r['hit@1']} | {r['hit@3']} | "
              f"{r['answer_has_fact']} | {r['false_refusal']} | {r['oos_refusal']} | {r['latency_ms_p95']} |")
    print(f"\nanswers kept in {scratch}")


if __name__ == "__main__":
    main()
