#!/usr/bin/env python3
"""Fit the reranker's weights (retrieval/data/rerank_weights.json) on the tuning half of the
project's own questions, and report both halves.

    .venv/bin/python scripts/train_rerank.py --data DATA_DIR [--write]

DATA_DIR is a data dir whose index holds the default corpus plus ../shared/corpus/extra (e.g.
``scripts/bench.py --keep DIR`` leaves one in DIR/default+extra). Training questions are the
``tune`` half (see ``scripts/bench.py:half_of``) of every tests/data/eval_*.jsonl file; the
``holdout`` half is only scored. For each question the candidates are exactly those the search
looks at; an article is a positive when it contains a gold snippet (normalised as the shared
scorer does). The model is a pairwise logistic regression (every positive against every
negative of the same question) with L2 regularisation: a linear score, so each weight stays
readable. Nothing here looks at ../shared/eval.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import unicodedata
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from bench import half_of  # noqa: E402
from retrieval.config import RetrievalConfig  # noqa: E402
from retrieval.normalize import strip_pinyin, to_simplified  # noqa: E402
from retrieval.rerank import FEATURES, WEIGHTS_FILE, Reranker  # noqa: E402
from retrieval.service import RetrievalService  # noqa: E402

_DROP = re.compile(r"[\s\W_]+", re.UNICODE)


def norm(text: str) -> str:
    return _DROP.sub("", to_simplified(unicodedata.normalize("NFKC", strip_pinyin(text))))


def load_questions(half: str) -> list[dict]:
    rows = []
    for path in sorted((REPO / "tests" / "data").glob("eval_*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                if not row.get("oos") and half_of(str(row["id"])) == half:
                    rows.append(row)
    return rows


def feature_rows(index, questions: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per question: (features of each candidate, 1/0 labels)."""
    out = []
    for q in questions:
        golds = [norm(g) for g in q["gold"]]
        _, rows, _ = index.candidates(q["q"])
        if not rows:
            continue
        x = np.array([[feats[f] for f in FEATURES] for _, feats, _ in rows], dtype=np.float64)
        y = np.array([any(g in norm(index.articles[key].text) for g in golds) for key, _, _ in rows], dtype=np.float64)
        out.append((x, y))
    return out


def fit(data: list[tuple[np.ndarray, np.ndarray]], l2: float, fixed: dict[str, float],
        steps: int = 3000, lr: float = 0.5) -> np.ndarray:
    """Weights for every feature; those in ``fixed`` keep their value (priors set by reasoning,
    for signals the tuning questions rarely exercise) and enter the fit as an offset."""
    mask = np.array([f in fixed for f in FEATURES])
    w_fixed = np.array([fixed.get(f, 0.0) for f in FEATURES])
    diffs = []
    for x, y in data:
        pos, neg = x[y == 1], x[y == 0]
        if len(pos) and len(neg):
            diffs.append((pos[:, None, :] - neg[None, :, :]).reshape(-1, x.shape[1]))
    d = np.vstack(diffs)
    offset = d @ w_fixed
    w = np.zeros(d.shape[1])
    for _ in range(steps):
        z = d @ w + offset
        p = 1.0 / (1.0 + np.exp(np.clip(z, -30, 30)))  # = sigmoid(-z)
        grad = -(d * p[:, None]).mean(axis=0) + l2 * w
        grad[mask] = 0.0
        w -= lr * grad
    return np.where(mask, w_fixed, w)


def evaluate(data: list[tuple[np.ndarray, np.ndarray]], w: np.ndarray) -> tuple[float, float]:
    """(hit@1, hit@3) over questions whose gold is among the candidates."""
    h1 = h3 = 0
    for x, y in data:
        order = np.argsort(-(x @ w), kind="stable")
        h1 += bool(y[order[0]])
        h3 += bool(y[order[:3]].any())
    return h1 / len(data), h3 / len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--l2", type=float, default=0.01)
    parser.add_argument("--write", action="store_true", help="write the weights file")
    args = parser.parse_args()
    service = RetrievalService(RetrievalConfig(index_dir=args.data / "index"))
    index = service.index
    tune, holdout = load_questions("tune"), load_questions("holdout")
    tune_rows, holdout_rows = feature_rows(index, tune), feature_rows(index, holdout)
    current = np.array([Reranker.load().weights[f] for f in FEATURES])
    fixed = json.loads(WEIGHTS_FILE.read_text(encoding="utf-8")).get("fixed", {})
    print(f"questions: tune {len(tune)} ({len(tune_rows)} with candidates), holdout {len(holdout)}")
    print("current weights: tune hit@1/3 %.3f/%.3f, holdout %.3f/%.3f" % (*evaluate(tune_rows, current), *evaluate(holdout_rows, current)))
    w = fit(tune_rows, args.l2, fixed)
    print("fitted  weights: tune hit@1/3 %.3f/%.3f, holdout %.3f/%.3f" % (*evaluate(tune_rows, w), *evaluate(holdout_rows, w)))
    for name, value in sorted(zip(FEATURES, w), key=lambda kv: -abs(kv[1])):
        print(f"  {name:16} {value:+.3f}")
    if args.write:
        tops = [float(np.max(x @ w)) for x, _ in tune_rows]
        bias = 1.5 - float(np.median(tops))  # a typical best candidate scores about 0.8
        WEIGHTS_FILE.write_text(json.dumps({
            "note": f"fitted by scripts/train_rerank.py on {date.today()}: pairwise logistic regression, l2={args.l2}, "
                    f"{len(tune_rows)} tuning questions (tests/data/eval_*.jsonl, tune half)",
            "bias": round(bias, 4),
            "fixed": fixed,
            "weights": {f: round(float(v), 4) for f, v in zip(FEATURES, w)},
        }, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {WEIGHTS_FILE}")


if __name__ == "__main__":
    main()
