"""The real-world zoo table in markdown, from the raw rows ``zoo.py --jsonl`` saved.

    python benchmarks/realworld_table.py results/realworld_{tv-tasks,smp,diffusers,ultralytics}.jsonl

Per model: the share of parameters each tool removed under each protocol (``fresh``: pruned
straight after building; ``warm``: after one forward), ours / Torch-Pruning's share where both
pass, and every failure. Per family: passes per tool and protocol, the median ours / TP, and
the reasons our skipped groups gave (each must name the op, output or layer that pinned it).
Rows are read the way ``zoo.py --table-from`` reads them: the last row of each (model, tool,
protocol) wins, so a re-run of a few rows appended to the file replaces the old ones.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import Counter

from zoo import removed, verdicts

PROTOCOLS = ("fresh", "warm")
GOAL = 0.95


def load(paths):
    fams: dict[str, dict[str, dict]] = {}
    for path in paths:
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                key = f"{r['tool']}:{r.get('protocol', 'warm')}"
                fams.setdefault(r["zoo"], {}).setdefault(r["model"], {})[key] = r
    return fams


def _pct(r):
    if r is None:
        return "-"
    if r["status"] == "timeout":
        return f"timeout ({r['time']:.0f}s)"
    if r["status"] != "ran":
        return "fail"
    return f"{100 * removed(r):.1f}%"


def _reason(text: str) -> str:
    """A skip reason with its numbers and layer names blurred, to count kinds of reasons."""
    text = re.sub(r"\d+", "N", text)
    return re.sub(r"'[^']*'|`[^`]*`", "'…'", text)[:140]


def family(name, rows, out):
    print(f"\n## {name}\n", file=out)
    print("| model | params | ours fresh | ours warm | TP fresh | TP warm | ours/TP fresh | "
          "ours/TP warm | status |", file=out)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|", file=out)
    passes = Counter()
    ratios = {p: [] for p in PROTOCOLS}
    below, reasons = [], Counter()
    for model, res in rows.items():
        first = next(r for r in res.values())
        status, cells = [], []
        for p in PROTOCOLS:
            o, t = res.get(f"ours:{p}"), res.get(f"tp:{p}")
            ov, tv = verdicts(o, t, None)
            passes[("ours", p)] += ov == "pass"
            passes[("tp", p)] += tv == "pass"
            if ov != "pass":
                status.append(f"ours {p}: {ov}")
            if tv is None:
                status.append(f"TP {p}: not run")
            elif tv != "pass":
                status.append(f"TP {p}: {tv}")
            ratio = "-"
            if (ov, tv) == ("pass", "pass"):
                ratio_v = removed(o) / removed(t)
                ratios[p].append(ratio_v)
                ratio = f"{ratio_v:.3f}" + (" ⚠" if ratio_v < GOAL else "")
                if ratio_v < GOAL:
                    below.append(f"{model} ({p}: {ratio_v:.3f})")
            cells.append(ratio)
            for _layer, why in (o or {}).get("info", {}).get("skipped_all", []):
                reasons[_reason(why)] += 1
        pc = {p: (_pct(res.get(f"ours:{p}")), _pct(res.get(f"tp:{p}"))) for p in PROTOCOLS}
        text = "; ".join(s.replace("|", "/")[:200] for s in status) or "all pass"
        print(f"| {model} | {first.get('params_before', 0) / 1e6:.2f}M | {pc['fresh'][0]} | "
              f"{pc['warm'][0]} | {pc['fresh'][1]} | {pc['warm'][1]} | {cells[0]} | "
              f"{cells[1]} | {text} |", file=out)
    n = len(rows)
    print(file=out)
    summary = ", ".join(f"{'ours' if t == 'ours' else 'TP'} {p} {passes[(t, p)]}/{n}"
                        for t in ("ours", "tp") for p in PROTOCOLS)
    med = "; ".join(f"{p}: median ours/TP {statistics.median(ratios[p]):.3f} over "
                    f"{len(ratios[p])} models both pass, >= {GOAL} on "
                    f"{sum(r >= GOAL for r in ratios[p])}/{len(ratios[p])}"
                    if ratios[p] else f"{p}: no model both pass" for p in PROTOCOLS)
    print(f"**Summary {name}**: passes {summary}. {med}. "
          f"Below {GOAL}: {', '.join(below) or 'none'}.\n", file=out)
    if reasons:
        print("Skipped groups, by reason (ours, both protocols):\n", file=out)
        for why, k in reasons.most_common():
            print(f"- {k} x {why}", file=out)
    return passes, ratios


def main(argv=None):
    paths = (argv if argv is not None else sys.argv[1:])
    out = sys.stdout
    print("# Real-world zoo: prune_explorer vs Torch-Pruning 1.6.1 (amount 0.5, L1)", file=out)
    for name, rows in load(paths).items():
        family(name, rows, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
