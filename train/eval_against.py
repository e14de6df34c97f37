"""Two evaluations of the same samples, compared: `train.evaluate --against OTHER.json`.

Each figure is this model's minus the other's, with a 95% interval from resampling the samples
(rendered images by held-out motion and background at once, real photos one by one) the same way
for both runs (train/intervals.py); an evaluation written before backgrounds were kept pairs
rendered images by motion alone. Only samples that both evaluations scored can be paired, so the other run
must have used the same sets, split and `--limit`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import InputError
from train.intervals import Interval, crossed_paired_difference

SETS = ("synthetic", "real")


@dataclass(frozen=True)
class Difference:
    """One figure of both runs and their paired difference (in `unit`)."""

    set_name: str
    figure: str
    ours: float
    theirs: float
    difference: Interval
    unit: str


def load_evaluation(path: Path) -> dict[str, Any]:
    """An evaluation's JSON (`--json`) with the per-sample record a comparison needs."""
    try:
        res = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"--against: cannot read {path} ({exc.strerror or exc})") from None
    except ValueError:
        raise InputError(f"--against: {path} is not JSON; give a file that `--json` wrote") from None
    if not isinstance(res, dict) or not any(isinstance(res.get(k), dict) for k in SETS):
        raise InputError(f"--against: {path} is not an evaluation (it has no synthetic or real results); give a "
                         f"file that this command's --json wrote")
    if not any(isinstance(res.get(k), dict) and "per_sample" in res[k] for k in SETS):
        raise InputError(f"--against: {path} holds no per-sample results; evaluate that model again with "
                         f"--json (evaluations written before per-sample results were kept cannot be paired)")
    return res


def _paired_sets(ours: dict[str, Any], theirs: dict[str, Any], other: Path) -> list[str]:
    sets = [k for k in SETS if "per_sample" in ours.get(k, {}) and "per_sample" in theirs.get(k, {})]
    if not sets:
        def evaluated(res: dict[str, Any]) -> str:
            return " and ".join(k for k in SETS if "per_sample" in res.get(k, {})) or "nothing"

        raise InputError(f"--against: {other} evaluated {evaluated(theirs)}, this run {evaluated(ours)}: no set "
                         f"to pair; evaluate both on the same sets")
    for k in sets:
        # The same photos before other backgrounds (--real-backdrops), or cut off (--cut), keep their
        # ids: what they were shown as must match too (where both files say; older ones may not).
        for what, mine, other_ in (("split", ours[k].get("split"), theirs[k].get("split")),
                                   ("--cut", ours.get("cut"), theirs.get("cut"))):
            if mine is not None and other_ is not None and mine != other_:
                raise InputError(f"--against: {other} evaluated {k} samples with {what} {other_!r}, this run with "
                                 f"{mine!r}: the same samples seen otherwise cannot be paired")
        a, b = ours[k]["per_sample"], theirs[k]["per_sample"]
        if any(a.get(key) != b.get(key) for key in ("ids", *_shared(a, b))):
            raise InputError(f"--against: {other} scored other {k} samples ({len(b.get('ids') or [])} against "
                             f"{len(a.get('ids') or [])} here); evaluate both with the same sets, split and --limit")
    return sets


def _shared(per_sample: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """The keys of what the samples share: their motion, and their background where both runs kept
    it (an evaluation written before backgrounds were kept has none)."""
    return ["clusters"] + (["backgrounds"] if "backgrounds" in per_sample and "backgrounds" in other else [])


def _factors(per_sample: dict[str, Any], other: dict[str, Any]) -> list[np.ndarray]:
    """What the samples share, resampled at once (`_shared`; real photos share nothing)."""
    return [np.asarray(per_sample[k]) for k in _shared(per_sample, other) if per_sample.get(k) is not None]


def _pck(k: str, ours: dict[str, Any], theirs: dict[str, Any], factors: list[np.ndarray]) -> Difference:
    a, b = ours[k]["per_sample"], theirs[k]["per_sample"]
    diff = crossed_paired_difference(a["pck_hits"], a["pck_joints"], b["pck_hits"], b["pck_joints"], factors)
    return Difference(k, "2D PCK@0.2", 100 * ours[k]["2d"]["pck"], 100 * theirs[k]["2d"]["pck"],
                      diff.scaled(100.0), "points")


def _errors_3d(ours: dict[str, Any], theirs: dict[str, Any], factors: list[np.ndarray]) -> list[Difference]:
    a, b = ours["synthetic"]["per_sample"], theirs["synthetic"]["per_sample"]
    if a.get("has_3d") != b.get("has_3d"):
        raise InputError("--against: the two evaluations have 3D labels on other samples")
    if a.get("has_3d") is not None:
        factors = [f[np.asarray(a["has_3d"], bool)] for f in factors]
    rows = []
    for method in [m for m in a.get("3d", {}) if m in b.get("3d", {})]:
        for key, figure in (("mpjpe_mm", "MPJPE"), ("pa_mpjpe_mm", "PA-MPJPE")):
            ea, eb = np.asarray(a["3d"][method][key]), np.asarray(b["3d"][method][key])
            ones = np.ones(len(ea))
            diff = crossed_paired_difference(ea, ones, eb, ones, factors)
            rows.append(Difference("synthetic", f"{figure} ({method})", ours["synthetic"]["3d"][method][key],
                                   theirs["synthetic"]["3d"][method][key], diff, "mm"))
    return rows


def unpaired_alignments(ours: dict[str, Any], theirs: dict[str, Any]) -> str | None:
    """Why some 3D errors are left out of the comparison: the runs aligned with other methods."""
    a = ours.get("synthetic", {}).get("per_sample", {}).get("3d", {})
    b = theirs.get("synthetic", {}).get("per_sample", {}).get("3d", {})
    left_out = sorted(set(a) ^ set(b))
    if not a or not b or not left_out:
        return None
    return (f"3D errors are compared for the alignment methods both runs used ({', '.join(m for m in a if m in b) or 'none'}); "
            f"this run used {', '.join(a)}, the other {', '.join(b)} (give the same --align to compare all)")


def compare(ours: dict[str, Any], theirs: dict[str, Any], other: Path) -> list[Difference]:
    """This evaluation's headline figures minus the other's, paired by sample."""
    rows: list[Difference] = []
    for k in _paired_sets(ours, theirs, other):
        factors = _factors(ours[k]["per_sample"], theirs[k]["per_sample"])
        if k == "synthetic":
            rows += _errors_3d(ours, theirs, factors)
        rows.append(_pck(k, ours, theirs, factors))
    return rows


def markdown(rows: list[Difference], other: Path) -> str:
    lines = [f"## This model minus {other.name} (paired by sample; 95% interval)", "",
             "| set | figure | this model | other | difference | 95% interval |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        d = r.difference
        span = f"{d.low:+.1f} to {d.high:+.1f}" if np.isfinite([d.low, d.high]).all() else "n/a"
        lines.append(f"| {r.set_name} | {r.figure} | {r.ours:.1f} | {r.theirs:.1f} | {d.value:+.1f} {r.unit} | "
                     f"{span} |")
    return "\n".join(lines) + "\n"


def as_json(rows: list[Difference], other: Path) -> dict[str, Any]:
    return {"other": str(other), "rows": [{"set": r.set_name, "figure": r.figure, "ours": r.ours, "theirs": r.theirs,
                                           "difference": r.difference.value, "interval": r.difference.as_list(),
                                           "unit": r.unit} for r in rows]}
