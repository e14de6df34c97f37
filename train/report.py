"""The ablation table: evaluation JSONs (from `train.evaluate --json`) -> one Markdown table.

    python -m train.report RUN_NAME=EVAL.json [...] [--out docs/ablation_table.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _fmt(value: Any, digits: int = 1, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def _lifter(model: dict[str, Any]) -> str:
    width = model.get("lift_width", 0)
    return f"{width}x{model.get('lift_blocks', 0)}" if width else "-"


def table(runs: list[tuple[str, dict[str, Any]]]) -> str:
    head = ("| run | fusion | lifter | roots | MPJPE average mm | MPJPE lstsq mm | MPJPE weighted mm | "
            "PA-MPJPE weighted mm | MPJPE weighted, tracking crops mm | synthetic PCK@0.2 % | real PCK@0.2 % | "
            "person-free crops found % |")
    lines = [head, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, d in runs:
        m3 = d["synthetic"]["3d"]
        tracking = d["synthetic"].get("framing", {}).get("tracking", {}).get("3d", {}).get("weighted", {})
        model = d["model"]
        lines.append(
            f"| {name} | {model['fusion']} | {_lifter(model)} | {len(model['roots'])} | "
            f"{_fmt(m3.get('average', {}).get('mpjpe_mm'))} | {_fmt(m3.get('lstsq', {}).get('mpjpe_mm'))} | "
            f"{_fmt(m3.get('weighted', {}).get('mpjpe_mm'))} | {_fmt(m3.get('weighted', {}).get('pa_mpjpe_mm'))} | "
            f"{_fmt(tracking.get('mpjpe_mm'))} | "
            f"{_fmt(d['synthetic']['2d']['pck'], 1, 100)} | {_fmt(d['real']['2d']['pck'], 1, 100) if d.get('real') else '-'} | "
            f"{_fmt(d.get('negative', {}).get('score', {}).get('detected'), 1, 100)} |"
        )
    samples = {d["synthetic"]["samples"] for _, d in runs}
    real = {d["real"]["samples"] for _, d in runs if d.get("real")}
    lines.append("")
    negatives = {d["negative"]["samples"] for _, d in runs if d.get("negative")}
    lines.append(f"Held-out synthetic images: {', '.join(map(str, sorted(samples)))}; held-out real photos: "
                 f"{', '.join(map(str, sorted(real))) or '-'}; person-free crops of held-out backgrounds "
                 f"(found: the tracker's score reaches `tracking.detect_min_score`): "
                 f"{', '.join(map(str, sorted(negatives))) or 'not measured'}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.report", description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", metavar="NAME=EVAL.json")
    ap.add_argument("--out", type=Path, help="write the table here (default: print it)")
    args = ap.parse_args(argv)
    runs = []
    for spec in args.runs:
        name, sep, path = spec.partition("=")
        if not sep:
            print(f"error: '{spec}' is not NAME=EVAL.json", file=sys.stderr)
            return 2
        try:
            runs.append((name, json.loads(Path(path).read_text())))
        except (OSError, json.JSONDecodeError) as exc:
            print(f"error: cannot read {path}: {exc}", file=sys.stderr)
            return 2
    text = table(runs)
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
