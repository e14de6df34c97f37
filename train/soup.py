"""Average trained networks: `python -m train.soup --models A.pt B.pt [...] --out SOUP.pt`.

The runs must share one architecture and should start from the same weights (here stages 12 and
13 continue stage 10, docs/results.md, "Stage 14"). The average of such fine-tuned networks (a
"uniform model soup", Wortsman et al. 2022) lies in the same basin as each of them, and is often
more robust away from the training data than any one of them. Every floating-point tensor is the
mean of the runs' tensors, batch-norm running statistics included; integer buffers (batch counts)
are taken from the first run. The output is a training-run checkpoint with the test-time
mirroring every run had (none where they differ: ship it with `python -m train.ship --flip-test
all`), and the weights line "soup of NAME, NAME, ..." (each run's own line up to its first ": "
or ", ") unless `--weights` gives one.
"""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path

from engines.arguments import OneLineParser
from engines.errors import InputError, PosecastError

PROG = "soup"                   # its lines of progress, as train.ship's
COMMAND = "python -m train.soup"  # its errors, as every python -m train.X tool's (README)


def soup(models: list[Path], out: Path, weights: str | None = None) -> str:
    """Writes `out`, the mean of `models`; returns its weights line."""
    import torch

    from engines.model_file import ModelInfo, load_checkpoint, save_checkpoint

    if len(models) < 2:
        raise InputError("--models needs at least two checkpoints to average")
    if any(Path(out).resolve() == Path(m).resolve() for m in models):
        raise InputError(f"--out is one of the --models ({out}); write the soup elsewhere")
    if weights is not None and not weights.strip():
        raise InputError("--weights must not be empty")
    loaded = [load_checkpoint(Path(m)) for m in models]
    base = replace(loaded[0][1].config, flip_test="none")
    for path, (_, info) in zip(models[1:], loaded[1:]):
        if replace(info.config, flip_test="none") != base:
            raise InputError(f"{path}: its model config differs from {models[0]}'s; only runs of one architecture "
                             "can be averaged")
    states = [net.state_dict() for net, _ in loaded]
    mean = {}
    with torch.no_grad():
        for key, tensor in states[0].items():
            if tensor.is_floating_point():
                mean[key] = torch.stack([s[key].float() for s in states]).mean(dim=0).to(tensor.dtype)
            else:
                mean[key] = tensor.clone()
    from engines.network import build_network

    # Test-time mirroring is how a network is run, not what it learnt: kept where every run had it.
    mirroring = {info.config.flip_test for _, info in loaded}
    if len(mirroring) == 1:
        base = replace(base, flip_test=mirroring.pop())
    net = build_network(base)
    net.load_state_dict(mean)
    net.eval()
    line = weights.strip() if weights is not None else \
        "soup of " + ", ".join(re.split(r":\s|,\s", info.weights, maxsplit=1)[0].strip() for _, info in loaded)
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(out, net, ModelInfo(base, line, trained=True))
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
    if len(mirroring) > 1:
        print(f"soup: note: the runs differ in test-time mirroring ({', '.join(sorted(mirroring))}); the soup has "
              f"none (python -m train.ship --flip-test sets it)", file=sys.stderr)
    return line


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog=COMMAND, description=__doc__.splitlines()[0].split(": ", 1)[0])
    p.add_argument("--models", required=True, nargs="+", type=Path, metavar="PT",
                   help="two or more .pt checkpoints of one architecture")
    p.add_argument("--out", required=True, type=Path, help="where to write the averaged .pt")
    p.add_argument("--weights", metavar="TEXT", help="what the weights are (default: 'soup of' the runs' names)")
    args = p.parse_args(argv)
    try:
        line = soup(args.models, args.out, args.weights)
    except PosecastError as exc:
        print(f"{COMMAND}: error: {exc}", file=sys.stderr)
        return 2
    print(f"{PROG}: wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
