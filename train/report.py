"""The ablation table: evaluation JSONs (from `train.evaluate --json`) -> one Markdown table.

    python -m train.report RUN_NAME=EVAL.json [...] [--out docs/ablation_table.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engines.arguments import OneLineParser
from engines.errors import InputError
from engines.files import check_report_output, replaced_when_done
from train.command import run_command

PROG = "python -m train.report"


def _fmt(value: Any, digits: int = 1, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def _counts(values: set[Any]) -> str:
    """Sample counts, smallest first; a count a report lacks shows as "?"."""
    numbers = sorted(v for v in values if isinstance(v, int))
    return ", ".join([*map(str, numbers), *(["?"] if len(numbers) < len(values) else [])])


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
            f"| {name} | {model.get('fusion', '-')} | {_lifter(model)} | {len(model.get('roots', [])) or '-'} | "
            f"{_fmt(m3.get('average', {}).get('mpjpe_mm'))} | {_fmt(m3.get('lstsq', {}).get('mpjpe_mm'))} | "
            f"{_fmt(m3.get('weighted', {}).get('mpjpe_mm'))} | {_fmt(m3.get('weighted', {}).get('pa_mpjpe_mm'))} | "
            f"{_fmt(tracking.get('mpjpe_mm'))} | "
            f"{_fmt(d['synthetic'].get('2d', {}).get('pck'), 1, 100)} | "
            f"{_fmt(d['real'].get('2d', {}).get('pck'), 1, 100) if isinstance(d.get('real'), dict) else '-'} | "
            f"{_fmt(d.get('negative', {}).get('score', {}).get('detected'), 1, 100)} |"
        )
    samples = {d["synthetic"].get("samples") for _, d in runs}
    real = {d["real"].get("samples") for _, d in runs if isinstance(d.get("real"), dict)}
    lines.append("")
    negatives = {d["negative"].get("samples") for _, d in runs if isinstance(d.get("negative"), dict)}
    lines.append(f"Held-out synthetic images: {_counts(samples)}; held-out real photos: "
                 f"{_counts(real) or '-'}; person-free crops of held-out backgrounds "
                 f"(found: the tracker's score reaches `tracking.detect_min_score`): "
                 f"{_counts(negatives) or 'not measured'}.")
    return "\n".join(lines) + "\n"


def read_runs(specs: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """NAME=EVAL.json pairs -> (name, evaluation), each an evaluation with synthetic 3D results."""
    runs = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path:
            raise InputError(f"'{spec}' is not NAME=EVAL.json (a run's name for the table, then its evaluation)")
        if "|" in name:
            raise InputError(f"the run name '{name}' holds a '|', which would break the Markdown table")
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
        synthetic = data.get("synthetic") if isinstance(data, dict) else None
        if not (isinstance(synthetic, dict) and isinstance(synthetic.get("3d"), dict)
                and isinstance(data.get("model"), dict)):
            raise InputError(f"{path} is not a `train.evaluate --json` report with synthetic 3D results (the table "
                             f"compares 3D errors): evaluate the run with --synth-val and --json")
        runs.append((name, data))
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", metavar="NAME=EVAL.json")
    ap.add_argument("--out", type=Path, help="write the table to this .md file (default: print it)")
    args = ap.parse_args(argv)
    return run_command(PROG, lambda: _report(args))


def _report(args: argparse.Namespace) -> int:
    runs = read_runs(args.runs)
    if args.out is not None:
        reason = check_report_output(args.out, "--out", ".md", {
            f"the evaluation of run '{spec.partition('=')[0]}'": spec.partition("=")[2] for spec in args.runs})
        if reason is not None:
            raise InputError(reason)
    samples = {d["synthetic"].get("samples") for _, d in runs}
    if len(samples) > 1:
        print(f"{PROG}: note: the runs were evaluated on different numbers of synthetic images "
              f"({_counts(samples)}): their figures are not paired", file=sys.stderr)
    text = table(runs)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        with replaced_when_done(args.out) as tmp:
            tmp.write_text(text)
    except OSError as exc:
        raise InputError(f"cannot write --out '{args.out}': {exc.strerror or exc}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
