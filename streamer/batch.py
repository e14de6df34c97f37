"""Several inputs tracked in turn (`posecast track a.mp4 b.mp4 -o 'tracks/{name}.jsonl'`), each
into outputs named after it: the naming, the checks made before the first input starts, and the
loop that goes on past an input that fails."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

from engines.errors import PosecastError, UsageError

NAME_FIELD = "{name}"
# Exit codes that mean the user (or the system) stopped the command, or its reader went away:
# the inputs after it are not started.
STOPPED_CODES = frozenset({129, 130, 141, 143})
_UNSAFE = re.compile(r"[^\w.-]+")


@dataclass(frozen=True)
class BatchItem:
    source: str                  # the input as given
    name: str                    # what {name} stands for in its outputs
    tracks: list[Path]
    overlay: Path | None


def input_name(source: str) -> str:
    """A file's name without its extension, a folder's name, a pattern's folder; anything else
    (a URL, a camera) with the characters a file name should not hold made '_'."""
    if "://" in source or source.isdigit() or source.startswith("/dev/"):
        return _UNSAFE.sub("_", source.split("://", 1)[-1]).strip("_") or "input"
    path = Path(source)
    if any(ch in path.name for ch in "*?["):
        path = path.parent
    return (path.stem if path.suffix and not path.is_dir() else path.name) or path.resolve().name or "input"


def _named(path: str, name: str) -> Path:
    # replace, not str.format: other braces in a path are the user's own.
    return Path(path.replace(NAME_FIELD, name))


def plan(sources: list[str], tracks: list[str], overlay: str | None) -> list[BatchItem]:
    """Each input with its outputs, {name} filled in. With several inputs every output must hold
    {name}, and the inputs' names must differ, or one input's files would overwrite another's."""
    outputs = tracks + ([overlay] if overlay else [])
    if len(sources) > 1:
        if "-" in tracks:
            raise UsageError(f"standard output ('-o -') takes one input's track, and {len(sources)} inputs were given; "
                             f"write each to its own file (-o 'tracks/{NAME_FIELD}.jsonl')")
        unnamed = next((o for o in outputs if NAME_FIELD not in o), None)
        if unnamed is not None:
            raise UsageError(f"{len(sources)} inputs would all be written to '{unnamed}': put {NAME_FIELD} in each "
                             f"output's path, which becomes each input's name (-o 'tracks/{NAME_FIELD}.jsonl')")
        seen: dict[str, str] = {}
        for source in sources:
            name = input_name(source)
            if name in seen:
                raise UsageError(f"'{seen[name]}' and '{source}' are both named '{name}', so their outputs would have "
                                 f"the same paths; give one of them another name, or track them in two commands")
            seen[name] = source
    items = []
    for source in sources:
        name = input_name(source)
        items.append(BatchItem(source, name, [_named(t, name) for t in tracks],
                               _named(overlay, name) if overlay else None))
    return items


def run_in_turn(items: list[BatchItem], run_one: Callable[[BatchItem], int], prog: str,
                out: TextIO | None = None) -> int:
    """Runs each item; an input that fails is said (its own line, from `run_one` or its
    PosecastError here) and the others go on. Stopped (Ctrl-C, a signal), the inputs after it are
    not started. Returns the first failing input's exit code, else 0."""
    out = out or sys.stderr
    failed: list[tuple[BatchItem, int]] = []
    for k, item in enumerate(items, 1):
        print(f"{prog}: [{k}/{len(items)}] {item.source}", file=out, flush=True)
        try:
            code = run_one(item)
        except PosecastError as exc:
            print(f"{prog}: error: {exc}", file=out, flush=True)
            code = exc.exit_code
        except PermissionError as exc:
            if exc.filename is None:
                raise
            print(f"{prog}: error: permission denied: '{exc.filename}' (check that you may read it or write in its "
                  f"folder, and enter every folder on its path)", file=out, flush=True)
            code = 2
        if code in STOPPED_CODES:
            rest = len(items) - k
            if rest:
                print(f"{prog}: the {rest} input{'s' if rest > 1 else ''} after '{item.source}' "
                      f"{'were' if rest > 1 else 'was'} not started", file=out, flush=True)
            return code
        if code:
            failed.append((item, code))
    if not failed:
        print(f"{prog}: all {len(items)} inputs done", file=out)
        return 0
    names = ", ".join(f"'{item.source}' (exit code {code})" for item, code in failed)
    done = len(items) - len(failed)
    others = f", and the other {done} {'were' if done != 1 else 'was'} done" if done else ""
    print(f"{prog}: error: {len(failed)} of {len(items)} inputs failed: {names}; the lines above say why{others}",
          file=out)
    return failed[0][1]
