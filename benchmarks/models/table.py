"""Turn the rows of ``recplane bench models --json`` into the Markdown tables of BENCHMARKS.md.

    recplane bench models --json > models.jsonl
    python benchmarks/models/table.py models.jsonl

Only formatting: every number comes from the rows as the suite wrote them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MODELS = ("mf", "lightgcn", "two_tower", "sasrec", "deepfm", "dcn", "din", "mmoe", "moe")
PEERS = {"mf": "BPR", "lightgcn": "LightGCN", "sasrec": "SASRec", "deepfm": "DeepFM"}


def number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def leaderboard(rows: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| model | metric | mean ± std (seeds) | extras | train s | s/epoch (train only) | samples/s | peak RSS MB "
        "| epochs run (best) |",
        "|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    for model in MODELS:
        row = rows.get(model)
        if row is None:
            continue
        if row.get("value") is None:
            lines.append(f"| `{model}` | — | error: {row.get('error')} | | | | | | |")
            continue
        extra_names = ("recall@10", "mrr@10") if row["unit"].startswith("ndcg") else ("gauc", "logloss", "like_auc")
        extras = ", ".join(f"{name} {number(row[name])}" for name in extra_names if name in row)
        epochs = ", ".join(f"{run} ({best})" for run, best in zip(row["epochs_run"], row["best_epoch"], strict=True))
        lines.append(
            f"| `{model}` | {row['unit']} | **{number(row['value'])}** ± {number(row['metric_std'])} ({row['runs']}) "
            f"| {extras} | {number(row['train_seconds'], 1)} | {number(row['median_epoch_seconds'], 3)} "
            f"| {number(row['samples_per_second'], 0)} | {number(row['peak_rss_mb'], 0)} | {epochs} |"
        )
    return lines


def comparison(rows: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| model (RecBole) | recplane s/epoch | RecBole s/epoch | ratio (target 5) | recplane metric (mean ± std) "
        "| RecBole metric | quality_ok | RecBole epochs run (best) / max | peak RSS recplane / RecBole MB |",
        "|---|---:|---:|---:|---|---|---|---|---|",
    ]
    for model, peer in PEERS.items():
        row = rows.get(f"vs_recbole_{model}")
        if row is None:
            continue
        if row.get("ratio") is None:
            lines.append(f"| `{model}` ({peer}) | {number(row.get('value'), 3)} | {row.get('baseline')} | | | | | | |")
            continue
        lines.append(
            f"| `{model}` ({peer}) | {number(row['value'], 3)} | {number(row['baseline_value'], 3)} "
            f"| **{number(row['ratio'], 1)}** | {row['metric']} {number(row['recplane_metric'])} ± "
            f"{number(row['recplane_metric_std'])} | {number(row['recbole_metric'])} | "
            f"{'yes' if row['quality_ok'] else 'no'}{'' if row['quality_comparable'] else ' (not like for like)'} "
            f"| {row['recbole_epochs_run']} ({row['recbole_best_epoch']}) / {row['recbole_max_epochs']} "
            f"| {number(row['recplane_peak_rss_mb'], 0)} / {number(row['recbole_peak_rss_mb'], 0)} |"
        )
    return lines


def text_lift(rows: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| model | segment | metric | without text | with MiniLM text | lift | ratio |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for model in ("two_tower", "deepfm"):
        for suffix, segment in (("", "all items"), ("_cold", "cold items (< 5 training interactions)")):
            row = rows.get(f"text_lift_{model}{suffix}")
            if row is None:
                continue
            if row.get("value") is None:
                lines.append(f"| `{model}` | {segment} | — | {row.get('skipped') or row.get('error')} | | | |")
                continue
            lines.append(
                f"| `{model}` | {segment} | {row['unit']} | {number(row['baseline_value'])} ± "
                f"{number(row['std_without'])} | {number(row['value'])} ± {number(row['std_with_text'])} "
                f"| {row['lift']:+.4f} | {number(row['ratio'], 3)} |"
            )
    return lines


def main(path: str) -> None:
    rows = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            rows[row["case"]] = row
    for title, lines in (("Leaderboard", leaderboard(rows)), ("recplane vs RecBole 1.2.1", comparison(rows)),
                         ("Text features (MiniLM)", text_lift(rows))):  # fmt: skip
        print(f"#### {title}\n")
        print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
