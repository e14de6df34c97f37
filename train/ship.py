"""Ship a trained checkpoint: `python -m train.ship --model RUN/model.pt --out engines/weights/default.pt`.

A training run writes its network exactly as it trained and validated it. Shipping copies the
weights bit for bit and may set what changes inference only, not the weights:
- `--flip-test none|3d|all`: test-time mirroring (engines/network.py), measured in docs/results.md;
- `--weights TEXT`: the line that says what the weights are (`posecast` prints it at start);
  by default the run's own line, with what `--flip-test` mirrors added when it turns mirroring on.
The output is checked by loading it back and comparing its outputs with the source network's; a
file that fails the check is removed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from engines.arguments import OneLineParser
from engines.errors import InputError, PosecastError
from engines.model_config import FLIP_TEST_MODES

PROG = "ship"                  # its lines of progress, as train.train's say "train:"
COMMAND = "python -m train.ship"  # its errors, as every python -m train.X tool's (README)
CHECKPOINT_SUFFIXES = (".pt", ".pth")       # what engines/models.py reads as a checkpoint
MIRRORED_NOTE = {"3d": "3D mirrored at test time", "all": "mirrored at test time"}


def ship(model: Path, out: Path, flip_test: str | None = None, weights: str | None = None) -> str:
    """Writes `out`; returns its weights line."""
    from dataclasses import replace

    import torch

    from engines.model_file import load_checkpoint, save_checkpoint, with_flip_test

    if weights is not None and not weights.strip():
        raise InputError("--weights must not be empty")
    if Path(out).suffix.lower() not in CHECKPOINT_SUFFIXES and not Path(out).is_dir():   # a folder: said below
        # The runtime picks a model's reader by its suffix: a checkpoint named .onnx (or anything
        # else) would be written, then refused by every command that is given it.
        raise InputError(f"--out must name a .pt file, since the shipped model is a PyTorch checkpoint (got '{out}'); "
                         f"for an ONNX model, ship to a .pt, then posecast export --model SHIPPED.pt -o MODEL.onnx")
    if Path(out).resolve() == Path(model).resolve():
        raise InputError(f"--out is the --model file itself ({out}); write the shipped model elsewhere")
    net, info = load_checkpoint(model)
    if flip_test is not None:
        switched_on = flip_test != "none" and info.config.flip_test == "none"
        net, info = with_flip_test(net, info, flip_test, model)
        if switched_on and weights is None:
            weights = f"{info.weights}, {MIRRORED_NOTE[flip_test]}"
    if weights is not None:
        info = replace(info, weights=weights.strip())
    out = Path(out)
    try:
        save_checkpoint(out, net, info)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None

    back, back_info = load_checkpoint(out)
    probe = torch.randint(0, 256, (2, info.config.input_size, info.config.input_size, 3), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        same = all(torch.equal(a, b) for a, b in zip(net(probe), back(probe)))
    if not same:
        out.unlink(missing_ok=True)
        raise PosecastError(f"{out}: the written model did not reproduce the source's outputs; removed it")
    return back_info.weights


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog=COMMAND, description=__doc__.splitlines()[0].split(": ", 1)[0])
    p.add_argument("--model", required=True, type=Path, help="a Posecast .pt checkpoint (a training run's model.pt)")
    p.add_argument("--out", required=True, type=Path, help="where to write the shipped .pt")
    p.add_argument("--flip-test", choices=FLIP_TEST_MODES,
                   help="test-time mirroring: none, 3d (the 3D only) or all (default: as in --model)")
    p.add_argument("--weights", metavar="TEXT", help="what the weights are (default: as in --model)")
    args = p.parse_args(argv)
    try:
        line = ship(args.model, args.out, args.flip_test, args.weights)
    except PosecastError as exc:
        print(f"{COMMAND}: error: {exc}", file=sys.stderr)
        return 2
    size_mb = args.out.stat().st_size / 1e6
    print(f"{PROG}: wrote {args.out} ({size_mb:.1f} MB): {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
