"""Several inputs tracked in turn (`posecast track a.mp4 b.mp4 -o 'tracks/{name}.jsonl'`), or
several tracks converted in turn (`posecast convert tracks/*.jsonl -o 'bvh/{name}.bvh'`), each
into outputs named after it: the naming, the checks made before the first input starts, and the
loop that goes on past an input that fails."""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TextIO
from urllib.parse import urlsplit

from engines.errors import InputError, PosecastError, UsageError
from engines.files import case_blind, file_identity
from engines.stop_signals import describe, exit_code, permission_denied
from streamer.pipeline import EXIT_INPUT_DAMAGED
from streamer.sources.av_source import redact_url
from streamer.protocol import END_OF_INPUT
from streamer.tracks import END_RECORDING_SUFFIXES, files_written, is_stdout, track_end, track_meta

if TYPE_CHECKING:
    from engines.models import ModelArtifact

NAME_FIELD = "{name}"
# Exit codes that mean the user (or the system) stopped the command, or its reader went away:
# the inputs after it are not started.
STOPPED_CODES = frozenset({129, 130, 141, 143})
_UNSAFE = re.compile(r"[^\w.-]+")
_GLOB = re.compile(r"[*?\[]")


class CommandFailed(Exception):
    """Raised by `run_one` for an input that failed for a reason of the command's, not the
    input's (the inference backend could not start), its line said already: every other input
    would fail the same way, so none is started."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


@dataclass(frozen=True)
class BatchItem:
    source: str                  # the input as given
    name: str                    # what {name} stands for in its outputs
    tracks: list[Path]
    overlay: Path | None


def input_name(source: str) -> str:
    """A file's name without its extension, a folder's name, a pattern's folder; anything else
    (a URL, a camera) with the characters a file name should not hold made '_'."""
    if "://" in source:
        # Never a password or a token in a file's name: the host, port, path and redacted query.
        parts = urlsplit(redact_url(source))
        source = parts.netloc.rpartition("@")[2] + parts.path + (f"?{parts.query}" if parts.query else "")
        return _UNSAFE.sub("_", source).strip("_") or "input"
    if source.isdigit() or source.startswith("/dev/"):
        return _UNSAFE.sub("_", source).strip("_") or "input"
    path = Path(os.path.expanduser(source))
    # A pattern is named by its folder ('x/*/*.png': x); a file that exists is itself, '[' or not.
    while not path.exists() and _GLOB.search(path.name):
        path = path.parent
    if path.name in ("", ".."):
        path = path.resolve()        # '.', '..': the folder's own name, never a step up
    return (path.stem if path.suffix and not path.is_dir() else path.name) or "input"


def _named_example(output: str) -> str:
    """`output` with {name} for its file name: 'bvh/x.bvh' -> 'bvh/{name}.bvh'."""
    path = Path(output)
    return str(path.with_name(NAME_FIELD + path.suffix))


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
                             f"output's path, which becomes each input's name (-o '{_named_example(unnamed)}')")
        seen: dict[str, str] = {}
        for source in sources:
            name = input_name(source)
            if name in seen and _same_file(seen[name], source):
                first, again = redact_url(seen[name]), redact_url(source)
                given = f"'{again}' is" if first == again else f"'{first}' and '{again}' are one file,"
                raise UsageError(f"{given} given twice as an input; give it once")
            if name in seen:
                raise UsageError(f"'{redact_url(seen[name])}' and '{redact_url(source)}' are both named '{name}', so "
                                 f"their outputs would have the same paths; give one of them another name, or track "
                                 f"them in two commands")
            seen[name] = source
    items = []
    for source in sources:
        name = input_name(source)
        items.append(BatchItem(source, name, [_named(t, name) for t in tracks],
                               _named(overlay, name) if overlay else None))
    return items


def _same_file(a: str, b: str) -> bool:
    try:
        return a == b or os.path.samefile(a, b)
    except OSError:                 # not both there: a pattern, a URL, a missing file
        return False


def missing_folders(items: list[BatchItem]) -> list[Path]:
    """The folders the items' outputs go in that do not exist, each once, in the items' order."""
    missing = {path.parent: None for item in items for path in files_written(item.tracks, item.overlay)
               if not path.parent.exists()}
    return list(missing)


def missing_folders_error(missing: list[Path]) -> InputError:
    """One line for several missing output folders ({name} in a folder's name makes one per
    input): all of them, so that one command makes them, where naming the first alone would take a
    run per folder to find them all. Folders are not made here, as a single input's are not: a
    mistyped folder must fail, not fill a new tree."""
    named = ", ".join(f"'{folder}'" for folder in missing)
    command = "mkdir -p " + " ".join(shlex.quote(str(folder)) for folder in missing)
    return InputError(f"{len(missing)} output folders do not exist: {named} (create them first: {command})")


def check_apart(items: list[BatchItem]) -> None:
    """Each input's outputs were checked alone (`_check_outputs`); across inputs, no output may be
    another input's output (`-o '{name}.csv' -o '{name}_2.csv'` with walk.mp4 and walk_2.mp4), nor
    another input (`--overlay '{name}_pose.mp4'` with walk.mp4 and walk_pose.mp4), which one
    input's run would overwrite before or after the other reads it. Names that differ only in case
    are one file where the folder does not tell them apart."""
    blind: dict[Path, bool] = {}
    inputs: dict[object, BatchItem] = {}
    for item in items:
        source = Path(os.path.expanduser(item.source))
        if "://" not in item.source and source.is_file():
            inputs[_key(source, blind)] = item
    seen: dict[object, tuple[Path, BatchItem]] = {}
    for item in items:
        for path in files_written(item.tracks, item.overlay):
            key = _key(path, blind)
            read = inputs.get(key)
            if read is not None and read is not item:
                raise InputError(f"'{path}', an output of '{redact_url(item.source)}', is the input "
                                 f"'{redact_url(read.source)}': writing it would destroy that input; name the "
                                 f"outputs apart from the inputs (in a folder of their own, for instance)")
            if key in seen and seen[key][1] is not item:
                first, other = seen[key]
                same = f"'{path}'" if str(first) == str(path) else f"'{first}' and '{path}'"
                raise InputError(f"{same} would be written by both '{redact_url(other.source)}' and "
                                 f"'{redact_url(item.source)}', the second over the first: name the outputs so that "
                                 f"no two inputs share one (each kind in a folder of its own, for instance)")
            seen[key] = (path, item)


def _key(path: Path, blind: dict[Path, bool]) -> object:
    """What names one file (`file_identity`); one not there yet by its name case folded where
    its folder does not tell case apart (asked once per folder)."""
    key = file_identity(path)
    if isinstance(key, tuple):
        return key
    if key.parent not in blind:
        blind[key.parent] = case_blind(path.parent)
    return key.with_name(key.name.casefold()) if blind[key.parent] else key


def _ends_recorded(item: BatchItem) -> list[Path]:
    return [t for t in item.tracks if t.suffix.lower() in END_RECORDING_SUFFIXES and not is_stdout(t)]


def check_skip_done(item: BatchItem) -> None:
    """--skip-done tells a finished input by the end its tracks record: it needs one that does."""
    if not _ends_recorded(item):
        raise UsageError(f"--skip-done tells an input done by the end its .jsonl, .csv or .npz track file records, "
                         f"and none is written; add one (-o 'tracks/{NAME_FIELD}.jsonl')")


@dataclass(frozen=True)
class MadeWith:
    """What a run's tracks record of the settings it is given, which `--skip-done` compares: a
    track made with another model, or in other axes, is not this command's."""
    model_file: str              # the meta's model.file: the ONNX file's name
    model_weights: str           # the meta's model.weights: what the weights are
    axes: str                    # the meta's axes.frame: camera, unity, ...

    @classmethod
    def of(cls, model: ModelArtifact, axes: str) -> MadeWith:
        return cls(model.onnx_path.name, model.info.weights, axes)

    def differs(self, meta: dict[str, Any]) -> bool:
        model = meta.get("model") or {}
        return (model.get("file"), model.get("weights"), (meta.get("axes") or {}).get("frame")) != (
            self.model_file, self.model_weights, self.axes)


def done_before(item: BatchItem, made_with: MadeWith | None = None) -> bool:
    """Whether an earlier run wrote every output of `item` and read the input to its end (see
    `_not_done_why`)."""
    return _not_done_why(item, made_with) is None


def _not_done_why(item: BatchItem, made_with: MadeWith | None) -> str | None:
    """None where an earlier run did `item`: every output is there, none older than the input (a
    video recorded again since, as `make` would see it), each track that records its end says
    `end_of_input` (one stopped, or failed, or whose run was killed, says otherwise or nothing),
    and each was made with `made_with`. Else why not: "settings" for the last, "" otherwise."""
    outputs = files_written(item.tracks, item.overlay)
    if not outputs or not all(path.is_file() for path in outputs):
        return ""
    source = Path(os.path.expanduser(item.source))
    try:
        if "://" not in item.source and source.exists() and \
                source.stat().st_mtime > min(path.stat().st_mtime for path in outputs):
            return ""
    except OSError:
        return ""
    recorded = _ends_recorded(item)
    ends = [track_end(track) for track in recorded]
    if not ends or not all(end is not None and end.get("reason") == END_OF_INPUT for end in ends):
        return ""
    if made_with is not None and any(made_with.differs(track_meta(track) or {}) for track in recorded):
        return "settings"
    return None


def skip_done(items: list[BatchItem], prog: str, out: TextIO | None = None,
              made_with: MadeWith | None = None) -> list[BatchItem]:
    """The items an earlier run did not finish (`done_before`); the others are said in one line,
    and the finished ones made with another model or axes, tracked again, in another."""
    out = out or sys.stderr
    why = [_not_done_why(item, made_with) for item in items]
    done = [item for item, w in zip(items, why) if w is None]
    left = [item for item, w in zip(items, why) if w is not None]
    if len(done) == 1 and len(items) == 1:
        print(f"{prog}: '{redact_url(done[0].source)}' was tracked to its end before, as its tracks record; "
              f"nothing to do (--skip-done)", file=out, flush=True)
    elif done and not left:
        print(f"{prog}: all {len(done)} inputs were tracked to their end before, as their tracks record; "
              f"nothing to do (--skip-done)", file=out, flush=True)
    elif done:
        named = ", ".join(f"'{redact_url(item.source)}'" for item in done[:3])
        more = f" and {len(done) - 3} more" if len(done) > 3 else ""
        print(f"{prog}: skipping {len(done)} of {len(items)} inputs tracked to their end before (--skip-done): "
              f"{named}{more}", file=out, flush=True)
    redone = sum(w == "settings" for w in why)
    if redone:
        whose = "1 input's tracks were" if redone == 1 else f"{redone} inputs' tracks were"
        print(f"{prog}: {whose} made with another model or in other axes: tracked again (--skip-done)",
              file=out, flush=True)
    return left


def run_in_turn(items: list[BatchItem], run_one: Callable[[BatchItem], int], prog: str,
                out: TextIO | None = None, frames: Callable[[], int] | None = None) -> int:
    """Runs each item; an input that fails is said (its own line, from `run_one` or its
    InputError here) and the others go on. Stopped (Ctrl-C, a signal), or failed for a reason of
    the command's (its config, model or backend: `CommandFailed`, or an error other than an
    InputError), the inputs after it are not started. Returns the exit code of a stop, else that
    of the first failing input (`batch_exit_code`), else 0. `frames`: how many frames the runs
    wrote so far, for the last line's rate over the whole command (each input's start included)."""
    out = out or sys.stderr
    t_start = time.monotonic()
    failed: list[tuple[BatchItem, int]] = []
    for k, item in enumerate(items, 1):
        print(f"{prog}: [{k}/{len(items)}] {redact_url(item.source)}", file=out, flush=True)
        commands = False              # the failure is the command's: the others would fail the same way
        try:
            code = run_one(item)
        except CommandFailed as exc:
            code, commands = exc.exit_code, True
        except PosecastError as exc:
            print(f"{prog}: error: {exc}", file=out, flush=True)
            # An input's failure is the input's; any other (a config, a model) the command's.
            code, commands = exc.exit_code, not isinstance(exc, InputError)
        except PermissionError as exc:
            if exc.filename is None:
                raise
            print(f"{prog}: error: {permission_denied(exc)}", file=out, flush=True)
            code = 2
        except KeyboardInterrupt as exc:
            # Between two inputs' runs (a run itself turns a stop into its exit code): nothing of
            # this input is half-written, and the one line of a stop is said as a run says it.
            print(f"{prog}: {describe(exc)}", file=out, flush=True)
            code = exit_code(exc)
        rest = len(items) - k
        if code in STOPPED_CODES or (commands and rest):
            # The last line still lists the inputs that failed before: the lines that said them
            # may have scrolled far away in a long batch.
            shown = redact_url(item.source)
            before = _failures(failed) if failed else None
            if rest:
                why = (" (they would fail the same way: what failed is the command's settings, model or backend, "
                       "not the input)") if commands else ""
                line = (f"{'error: ' if commands else ''}the {rest} input{'s' if rest != 1 else ''} after '{shown}' "
                        f"{'were' if rest != 1 else 'was'} not started{why}")
                line += f"; before it, {before}" if before else ""
            else:
                line = f"before '{shown}', {before}" if before else None
            if line is not None:
                print(f"{prog}: {line}", file=out, flush=True)
            return batch_exit_code([c for _, c in failed] + [code]) if commands else code
        if code:
            failed.append((item, code))
    if not failed:
        seconds, total = time.monotonic() - t_start, frames() if frames is not None else None
        rate = f": {total} frames in {seconds:.1f} s, {total / seconds:.1f} frames/s with each input's start" \
            if total is not None and seconds > 0 else ""
        print(f"{prog}: all {len(items)} inputs done{rate}", file=out)
        return 0
    done = len(items) - len(failed)
    others = f", and the other {done} {'were' if done != 1 else 'was'} done" if done else ""
    print(f"{prog}: error: {len(failed)} of {len(items)} inputs failed: {', '.join(_listed(failed))}; the lines above "
          f"say why{others}", file=out)
    return batch_exit_code([code for _, code in failed])


def batch_exit_code(codes: list[int]) -> int:
    """The first failing input's exit code, but 3 (frames damaged, the others' poses written) only
    where every failure was that: a 3 must not hide an input that gave nothing (2) or a stage that
    failed (1) after it, as it would if only the order of the inputs chose."""
    return next((code for code in codes if code != EXIT_INPUT_DAMAGED), codes[0])


def _listed(failed: list[tuple[BatchItem, int]]) -> list[str]:
    return [f"'{redact_url(item.source)}' (exit code {code})" for item, code in failed]


def _failures(failed: list[tuple[BatchItem, int]]) -> str:
    return f"{len(failed)} input{'s' if len(failed) != 1 else ''} failed: {', '.join(_listed(failed))}"
