#!/usr/bin/env python3
"""`make bench`: retrieval quality and speed on the shared dev set (not part of `make test`).

Builds two indexes in a scratch data dir -- the default corpus, and the default corpus plus
../shared/corpus/extra -- then runs `dangjian batch` on each question set and scores it with
../shared/eval/score.py. Prints hit@1/3/5, MRR, refusal rates, latency p50/p95, ingest seconds
and peak RSS of each step.
"""
from __future__ import annotations

import argparse
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


def run(args: list[str], env: dict, stdout=None) -> tuple[float, int]:
    """Run a dangjian command; return (seconds, peak RSS MiB of that child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.monotonic()
    proc = subprocess.run([str(BIN / "dangjian"), *args], env=env, stdout=stdout, stderr=subprocess.PIPE, text=True)
    seconds = time.monotonic() - started
    if proc.returncode not in (0, 1):
        sys.exit(f"dangjian {' '.join(args)} failed:\n{proc.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) // 1024


def score(shared: Path, gold: Path, answers: Path) -> dict:
    out = subprocess.run([sys.executable, str(shared / "eval" / "score.py"), str(gold), str(answers), "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--sets", nargs="*", type=Path, default=None, help="extra question files to score")
    args = parser.parse_args()
    shared = args.shared.resolve()
    question_sets = [shared / "eval" / "dev.jsonl", *[p for p in (REPO / "tests" / "data").glob("eval_*.jsonl")]]
    question_sets += args.sets or []
    configs = {"default": [REPO / "corpus"], "default+extra": [REPO / "corpus", shared / "corpus" / "extra"]}
    for name, paths in configs.items():
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "DANGJIAN_DATA_DIR": tmp, "ANONYMIZED_TELEMETRY": "False"}
            env.pop("DANGJIAN_LLM_BASE_URL", None)
            seconds, rss = run(["ingest", *map(str, paths)], env)
            print(f"\n== {name}: ingest {seconds:.1f} s, peak RSS {rss} MiB")
            for qs in question_sets:
                answers = Path(tmp) / f"{qs.stem}.out.jsonl"
                with open(answers, "w", encoding="utf-8") as fh:
                    seconds, rss = run(["batch", str(qs)], env, stdout=fh)
                result = score(shared, qs, answers)
                keys = ["questions", "hit@1", "hit@3", "hit@5", "mrr", "answer_has_fact", "false_refusal",
                        "oos_refusal", "malformed_citations", "latency_ms_p50", "latency_ms_p95"]
                print(f"-- {qs.name}: batch {seconds:.1f} s, peak RSS {rss} MiB")
                print("   " + "  ".join(f"{k}={result[k]}" for k in keys))
                for miss in result["misses"][:40]:
                    print("   miss", *miss)


if __name__ == "__main__":
    main()
