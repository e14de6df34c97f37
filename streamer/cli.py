"""`posecast`: the command line.

Every failure a user can act on ends with one line on stderr (`posecast: error: ...`) and a
non-zero exit code:
  0 done · 1 a stage failed · 2 bad input, config, model or arguments · 3 done, but frames of the
  input were damaged or missing (counted, and said where) · 130 interrupted (Ctrl-C; 143 for SIGTERM,
  129 for SIGHUP) · 141 the reader of its output went away.
Imports stay inside the commands: the stage processes import this module too, and none of them
should pay for what another command needs.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from engines.arguments import OneLineParser
from engines.config import OVERRIDES_SOURCE
from engines.errors import ConfigError, UsageError
from engines.stop_signals import run_command
from streamer.config import (AlignmentConfig, CoordinatesConfig, InferenceConfig, PipelineConfig, PublishConfig,
                             load_pipeline_config)
from streamer.filters import FilterConfig
from streamer.protocol import POSE_TOPIC

if TYPE_CHECKING:
    from engines.models import ModelArtifact
    from streamer import batch
    from streamer.packets import EndPacket
    from streamer.pipeline import RunResult

PROG = "posecast"


def _choices(section: type, key: str) -> tuple[str, ...]:
    """A config key's allowed values, from its Literal type: one list for config and flags."""
    return typing.get_args(typing.get_type_hints(section)[key])


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _note(message: str, out: TextIO | None = None) -> None:
    print(f"{PROG}: {message}", file=out or sys.stderr)


# --- track -------------------------------------------------------------------------------

def _add_run_options(p: argparse.ArgumentParser, command: str) -> None:
    """The options of the commands that run the pipeline (track, demo, run, bench), as each
    takes them: `run` and `bench` always publish, so --publish is not offered; `run` plays a file
    as a live source, one frame at a time, so --batch-size is not; `bench` always prints the timings."""
    p.add_argument("--model", metavar="FILE", help="a Posecast .onnx or .pt model (default: the built-in model)")
    p.add_argument("--backend", choices=_choices(InferenceConfig, "backend"),
                   help="inference backend (default from the config: auto, the fastest present)")
    p.add_argument("--device", choices=_choices(InferenceConfig, "device"), help="where the network runs (default: auto)")
    p.add_argument("--precision", choices=_choices(InferenceConfig, "precision"),
                   help="GPU precision (default fp16; the CPU always runs fp32)")
    p.add_argument("--calibration", metavar="SOURCE",
                   help="TensorRT int8 only: a video or image folder of typical scenes to calibrate with")
    p.add_argument("--config", metavar="YAML", help="a pipeline config laid over configs/pipeline.yaml")
    # Options a command does not heed stay accepted (scripts written for earlier versions pass
    # them) but are not offered; `run` says when it ignores --batch-size.
    p.add_argument("--batch-size", type=int, metavar="N",
                   help=argparse.SUPPRESS if command == "run" else
                   "frames per network call for files" + (" (ignored with --live)" if command == "bench" else ""))
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for the network (0: the runtime's default; at most 256)")
    p.add_argument("--align", choices=_choices(AlignmentConfig, "method"), help="root alignment method")
    p.add_argument("--filter", choices=_choices(FilterConfig, "method"),
                   help="temporal filter on joints_3d, after the learned temporal refiner (default auto: "
                        "one_euro live; kalman for files, smoothed over the next filter.file_lag frames; "
                        "off: neither the filter nor the refiner)")
    p.add_argument("--axes", choices=_choices(CoordinatesConfig, "axes"),
                   help="axes of joints_3d and root_3d (default camera: x right, y down, z forward, metres)")
    p.add_argument("--focal", type=float, metavar="PX", help="the camera's focal length in pixels (for root_3d, and to turn a ray-frame model's 3D into camera axes)")
    p.add_argument("--principal", type=float, nargs=2, metavar=("CX", "CY"),
                   help="where the optical axis meets the image, in pixels (default: the image centre; "
                        "another place for a frame cut off-centre from a larger one)")
    p.add_argument("--min-score", type=float, metavar="S",
                   help="mean joint confidence needed to report a person (sets both tracking thresholds)")
    p.add_argument("--publish", action="store_true",
                   help="also publish the stream over ZeroMQ (see docs/protocol.md)" if command in ("track", "demo")
                   else argparse.SUPPRESS)
    if command in ("run", "bench"):
        p.set_defaults(publish=True)
    p.add_argument("--bind", metavar="ADDR", help="publishing interface (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, metavar="N",
                   help="publishing port (default: any free one, or publish.port of a --config file)"
                   if command == "bench" else
                   "publishing port (default publish.port in configs/pipeline.yaml: 5556; 0 for any free one)")
    p.add_argument("--encoding", choices=_choices(PublishConfig, "encoding"), help="published payload encoding (default msgpack)")
    if command in ("track", "run"):
        p.add_argument("--wait-subscribers", type=int, metavar="N",
                       help="hold the first frame until N subscribers read the poses, so that none misses the "
                            "start of a file (default publish.wait_subscribers: 0, start at once)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--stats", action="store_true",
                   help=argparse.SUPPRESS if command == "bench" else "print per-stage timings at the end")
    if command == "bench":
        p.set_defaults(stats=True)
    p.add_argument("-v", "--verbose", action="store_true", help="log what each stage does")


# The options that set a pipeline config key: (section, key, option). A flag counts where given.
CONFIG_OPTIONS = (
    ("inference", "backend", "--backend"), ("inference", "device", "--device"),
    ("inference", "precision", "--precision"), ("inference", "calibration", "--calibration"),
    ("inference", "batch_size", "--batch-size"), ("inference", "threads", "--threads"),
    ("alignment", "method", "--align"), ("filter", "method", "--filter"), ("coordinates", "axes", "--axes"),
    ("source", "loop", "--loop"),
    ("coordinates", "focal_px", "--focal"), ("coordinates", "principal_px", "--principal"),
    ("publish", "enabled", "--publish"), ("publish", "bind", "--bind"), ("publish", "port", "--port"),
    ("publish", "encoding", "--encoding"), ("publish", "wait_subscribers", "--wait-subscribers"),
    ("tracking", "detect_min_score", "--min-score"), ("tracking", "track_min_score", "--min-score"),
)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {}
    for section, key, option in CONFIG_OPTIONS:
        value = getattr(args, option[2:].replace("-", "_"), None)
        if value is not None and value is not False:        # False: a flag not given
            o.setdefault(section, {})[key] = value
    if getattr(args, "reconnect", False):                   # `run` sets it: a live source is reopened
        o.setdefault("source", {})["reconnect"] = True
    return o


def _load_pipeline_config(args: argparse.Namespace, overrides: dict[str, Any]) -> PipelineConfig:
    """The pipeline config with the options laid over it; a bad option's value is named by the
    option typed (--min-score), not by the config key it sets (tracking.detect_min_score)."""
    try:
        return load_pipeline_config(args.config, overrides)
    except ConfigError as exc:
        raise ConfigError(_said_of_options(str(exc), overrides)) from None


def _said_of_options(message: str, overrides: dict[str, Any]) -> str:
    """An error in the overrides with each config key an option set named by that option."""
    head = f"{OVERRIDES_SOURCE}: "
    if not message.startswith(head):
        return message                      # the config file's own error
    said = original = message[len(head):]
    for section, key, option in CONFIG_OPTIONS:
        if key not in overrides.get(section, {}):
            continue
        name = re.escape(f"{section}.{key}")
        said = re.sub(rf"'?{name}(?:\[(\d+)\])?(?!\w)'?",
                      lambda m: option + (f" (value {int(m[1]) + 1})" if m[1] else ""), said)
    return said if said != original else message


def _check_outputs(tracks: list[Path], overlay: Path | None, source: str | None = None) -> None:
    """Fail before any work starts when an output cannot be written, or would overwrite the
    input or another output."""
    from engines.errors import InputError
    from engines.files import file_identity, input_overwritten
    from streamer.tracks import (TRACK_SUFFIXES, WHOLE_FILE_SUFFIXES, files_written, is_stdout, sidecar_path,
                                 track_format_error)

    if sum(map(is_stdout, tracks)) > 1:
        raise InputError("standard output ('-o -') is given twice as an output; give it once")
    tracks = [t for t in tracks if not is_stdout(t)]       # nothing to check: it is open already
    # A CSV's meta sidecar is an output too: unwritable, it would fail the run after the other
    # tracks were opened, and emptied.
    sidecar_of = {s: t for t in tracks if (s := sidecar_path(t)) is not None}
    outputs = files_written(tracks, overlay)
    seen: dict[object, Path] = {}
    for path in outputs:
        key = file_identity(path)
        if key in seen:
            csv = sidecar_of.get(seen[key]) or sidecar_of.get(path)
            if csv is not None:
                raise InputError(f"'{path}' is where the CSV track '{csv}' writes its meta; give the other "
                                 "output another name")
            raise InputError(f"'{path}' is given twice as an output; give each output its own file")
        seen[key] = path
    if source is not None and Path(source).is_file() and any(input_overwritten(p, {"input": source}) for p in outputs):
        raise InputError(f"'{source}' is both the input and an output; writing would destroy the input")

    for path in outputs:
        # .jsonl and .csv tracks are written as they go; .npz, .bvh and the overlay replace their file.
        _check_writable(path, streamed=path in tracks and path.suffix.lower() not in WHOLE_FILE_SUFFIXES)
    for path in tracks:
        if path.suffix.lower() not in TRACK_SUFFIXES:
            raise track_format_error(path)
    from streamer.overlay import OVERLAY_SUFFIXES

    if overlay is not None and overlay.suffix.lower() not in OVERLAY_SUFFIXES:
        raise InputError(f"overlay '{overlay}' must be an {', '.join(OVERLAY_SUFFIXES[:-1])} or {OVERLAY_SUFFIXES[-1]} file")


def run_track(source: str, tracks: list[Path], overlay: Path | None, args: argparse.Namespace,
              realtime: bool = False, publish: bool = False, heading: str | None = None,
              report: TextIO | None = None) -> int:
    """`heading`: a line said once the arguments, config and model are found good (a bad one is
    then its error line alone). `report`: where the heading, the summary and the timings go, when
    they are the command's result (`bench`: standard output); by default with the notes, on stderr."""
    return _track(source, tracks, overlay, args, realtime, publish, heading, report).exit_code


def _track(source: str, tracks: list[Path], overlay: Path | None, args: argparse.Namespace,
           realtime: bool = False, publish: bool = False, heading: str | None = None,
           report: TextIO | None = None) -> RunResult:
    """`run_track`, with the run's whole result: who failed, not only how it ended."""
    from engines.models import resolve_model
    from streamer.pipeline import EXIT_INPUT_DAMAGED, Pipeline, RunRequest
    from streamer.refiner import resolve_refiner, shipped_refiners_unused
    from streamer.sources import redact_url

    overrides = _overrides(args)
    if publish:
        overrides.setdefault("publish", {})["enabled"] = True
    config = _load_pipeline_config(args, overrides)
    _check_outputs(tracks, overlay, source)
    model = resolve_model(args.model)
    if heading is not None:
        _note(heading, report)
    if not model.info.trained:
        _note(f"note: the model is {model.info.weights}; its poses are not meaningful")
    if config.inference.calibration is not None:
        from streamer.calibration import calibration_used, unread_note

        if not calibration_used(config.inference):
            _note(unread_note(config.inference.calibration))
    refiner = resolve_refiner(config.filter.refiner, model.checkpoint_path, model.checkpoint_sha256)
    live_refiner = resolve_refiner(config.filter.live_refiner, model.checkpoint_path, model.checkpoint_sha256, live=True)
    unused = shipped_refiners_unused((config.filter.refiner, config.filter.live_refiner), (refiner, live_refiner),
                                     _refiners_read(source, realtime))
    if model.info.trained and config.filter.method != "off" and any(unused):
        _note(_unrefined_note(model, unused))
    request = RunRequest(source=source, model=model, config=config, tracks=tracks, overlay=overlay, refiner=refiner,
                         live_refiner=live_refiner,
                         progress=not args.no_progress and sys.stderr.isatty(),
                         log_level=logging.INFO if args.verbose else logging.WARNING, announce=_note,
                         realtime=realtime, preview=bool(getattr(args, "preview", False)))
    result = Pipeline(request).run()
    if result.error_quiet:
        return result
    # An input that failed, or a run stopped, before its first frame is said by its one line alone.
    if result.summary is not None and not ((result.error is not None or result.interrupted)
                                           and result.summary.frames == 0):
        _print_summary(result, tracks, overlay, args.stats, report)
    if result.error is not None:
        if result.traceback:
            print(result.traceback, file=sys.stderr)
        _error(result.error)
    elif result.interrupted:
        # Named as listen and replay name it: a script's kill may not be the Ctrl-C a user pressed.
        how = f"interrupted ({signal.Signals(result.exit_code - 128).name})"
        if not tracks and overlay is None:
            _note(how)
        elif not result.outputs_begun:
            _note(f"{how} before the first frame; no file was written")
        else:
            _note(f"{how}; everything processed so far was written")
    elif result.exit_code == EXIT_INPUT_DAMAGED:
        assert result.summary is not None         # the damage is counted in it
        _error(f"{result.summary.end.corrupt} frame(s) or image(s) of '{redact_url(source)}' were damaged or missing "
               f"and have no pose (the warnings above say where); the other {result.summary.frames} frames were "
               f"processed (exit code {EXIT_INPUT_DAMAGED})")
    return result


def _refiners_read(source: str, realtime: bool) -> tuple[bool, bool]:
    """Which temporal refiners a run of `source` reads: (a file's, a live source's). A camera, or
    anything played in real time, the live one; a video file the file one; a stream either (which
    one is known only once it is open); pictures neither."""
    from streamer.sources import source_kind

    kind = source_kind(source)
    return not realtime and kind in ("file", "stream"), realtime or kind in ("camera", "stream")


def _unrefined_note(model: ModelArtifact, unused: tuple[bool, bool]) -> str:
    """The note for a trained model that `filter.refiner` / `filter.live_refiner: auto` left
    unrefined (`unused`, in that order): how to give it a refiner of its own, or turn them off."""
    keys = " and ".join(k for k, u in zip(("filter.refiner", "filter.live_refiner"), unused) if u)
    if model.checkpoint_sha256 is None:
        return (f"note: this ONNX file does not record the checkpoint it was exported from, so no temporal refiner "
                f"can run behind it and its poses are not refined; export it again (posecast export --model "
                f"CHECKPOINT.pt) or run the .pt file, or set {keys}: off")
    # A refiner records its checkpoint's digest: an ONNX file's is the .pt file it was exported from.
    checkpoint = model.checkpoint_path or "CHECKPOINT.pt"
    live = " (--future 0 for filter.live_refiner)" if unused[1] else ""
    return (f"note: the shipped temporal refiners fit only the shipped model, so this model's poses are not refined; "
            f"train one for it (python -m train.temporal --model {checkpoint} --clips ... --tracks ... --out R.npz"
            f"{live}) and name it under {keys}, or set {keys}: off")


def _print_summary(result: RunResult, tracks: list[Path], overlay: Path | None, stats: bool,
                   out: TextIO | None = None) -> None:
    s = result.summary
    assert s is not None
    end = s.end
    # Without a frame no file is made (one already there is left as it was).
    written = tracks + ([overlay] if overlay is not None else []) if s.frames else []
    from streamer.tracks import is_stdout

    named = ["standard output" if is_stdout(p) else str(p) for p in written]
    outs = ", ".join(named + ([result.endpoint] if result.endpoint else [])) or "nowhere"
    line = (f"{s.frames} frame{'' if s.frames == 1 else 's'} in {s.seconds:.2f} s ({s.frames_per_s:.1f} frames/s) "
            f"-> {outs}; "
            f"person found in {s.found}; backend {result.backend}")
    # After a stage failed mid-run, the counts of the stages before it never reached the summary.
    if end.capture_counted and (s.live or end.dropped):
        line += f"; {end.dropped} stale frames dropped to stay live"
    if end.capture_counted and end.reconnects:
        line += f"; the source was reopened {'once' if end.reconnects == 1 else f'{end.reconnects} times'}"
    if end.tracker_counted and end.shot_cuts:
        n = end.shot_cuts
        line += f"; {n} cut{'' if n == 1 else 's'} between shots (each searched afresh, a new person id)"
    _note(line, out)
    if stats:
        _print_stats(end, out or sys.stderr)


def _print_stats(end: EndPacket, out: TextIO) -> None:
    from streamer.pipeline import STAGES

    rows = []
    for stage in (*STAGES, "per_frame"):
        for step, st in end.timings.get(stage, {}).items():
            rows.append((step if stage == "per_frame" else f"{stage}.{step}", st))
    print(f"{'step':<28}{'n':>7}{'mean ms':>10}{'p50 ms':>10}{'p95 ms':>10}", file=out)
    for name, st in rows:
        print(f"{name:<28}{st.n:>7}{st.mean:>10.2f}{st.p50:>10.2f}{st.p95:>10.2f}", file=out)
    if not end.tracker_counted:
        print("network runs, searches and tracks: not known (the align stage failed before the end of the input "
              "reached it)", file=out)
        return
    print(f"network runs: {end.network_runs} (batches incl. searches); full-frame searches: {end.searches} "
          f"({end.switches} took over from the track); tracks (person ids): {end.tracks}", file=out)


def cmd_track(args: argparse.Namespace) -> int:
    tracks = [Path(p) for p in (args.output or [])]
    # A --config file may publish (publish.enabled) as --publish does; read here only where that
    # decides a usage error (run_track reads it for the run).
    maybe_error = not (tracks or args.overlay) or bool(args.wait_subscribers)
    publishing = args.publish or (maybe_error and _load_pipeline_config(args, _overrides(args)).publish.enabled)
    if not tracks and not args.overlay and not publishing:
        raise UsageError("nothing to write: give -o OUT.jsonl (or .csv, .npz, .bvh), --overlay OUT.mp4 and/or --publish")
    if args.wait_subscribers and not publishing:
        raise UsageError("--wait-subscribers waits for subscribers to the published stream: give --publish too")
    from streamer import batch

    if len(args.input) > 1:
        expanded = expanded_pattern_note(args.input)
        if expanded is not None:
            raise UsageError(expanded)
        if args.publish:
            raise UsageError(f"--publish streams one input, and {len(args.input)} inputs were given; publish each "
                             f"with a command of its own (posecast run for a live stream)")
    items = batch.plan(args.input, [str(t) for t in tracks], args.overlay)
    if args.skip_done:
        batch.check_skip_done(items[0])
    if len(items) == 1:
        if args.skip_done and not batch.skip_done(items, PROG, made_with=_made_with(args)):
            return 0
        return run_track(items[0].source, items[0].tracks, items[0].overlay, args)
    return _track_in_turn(items, args)


def _made_with(args: argparse.Namespace) -> batch.MadeWith:
    """What this command's tracks will record of its model and axes (`--skip-done` compares)."""
    from engines.models import resolve_model
    from streamer import batch

    return batch.MadeWith.of(resolve_model(args.model), _load_pipeline_config(args, _overrides(args)).coordinates.axes)


def _track_in_turn(items: list[batch.BatchItem], args: argparse.Namespace) -> int:
    """`track` of several inputs. The config and the model are the command's, not an input's: a
    bad one is its one line, said once before the first input starts, not once for every input."""
    from engines.models import resolve_model
    from streamer import batch

    config = _load_pipeline_config(args, _overrides(args))
    if config.publish.enabled:
        named = f"--config {args.config}" if args.config else "the pipeline config"
        raise UsageError(f"{named} publishes (publish.enabled), which streams one input, and {len(items)} inputs "
                         f"were given; publish each with a command of its own, or give a config that does not publish")
    model = resolve_model(args.model)
    _check_batch_outputs(items)
    if args.skip_done:
        items = batch.skip_done(items, PROG, made_with=batch.MadeWith.of(model, config.coordinates.axes))
        if not items:
            return 0

    written = [0]                       # frames, over the inputs run so far

    def run_one(item: batch.BatchItem) -> int:
        result = _track(item.source, item.tracks, item.overlay, args)
        written[0] += result.summary.frames if result.summary is not None else 0
        # The inference stage fails before any frame only where its backend cannot start (or its
        # int8 calibration cannot be read): every other input would fail so too.
        if result.error_stage == "infer" and result.exit_code == 2 and not result.outputs_begun:
            raise batch.CommandFailed(result.exit_code)
        return result.exit_code

    return batch.run_in_turn(items, run_one, PROG, frames=lambda: written[0])


def _check_batch_outputs(items: list[batch.BatchItem]) -> None:
    """Every output of several inputs is checked before the first input starts: a mistyped
    folder fails at once, and no input's output may be another input or its output."""
    from streamer import batch

    missing = batch.missing_folders(items)
    if len(missing) > 1:
        raise batch.missing_folders_error(missing)
    for item in items:
        _check_outputs(item.tracks, item.overlay, item.source)
    batch.check_apart(items)


def cmd_demo(args: argparse.Namespace) -> int:
    from engines.files import remove_if_empty

    out = Path(args.out_dir)
    created = _make_out_dir(out)
    try:
        code = _run_demo(out, args)
    except BaseException:
        remove_if_empty(created)
        raise
    if code != 0:
        remove_if_empty(created)        # a failed run leaves no empty folder behind
    return code


def _run_demo(out: Path, args: argparse.Namespace) -> int:
    from engines.cache import cache_error
    from streamer.synthclip import default_clip_path, ensure_default_clip

    # A bad --config file or option is its one line before the clip is rendered or announced.
    _load_pipeline_config(args, _overrides(args))
    try:
        clip = ensure_default_clip(progress=sys.stderr.isatty())
    except OSError as err:
        raise cache_error(default_clip_path(), err) from None
    _note(f"demo input: {clip} (a synthetic clip rendered by Posecast)")
    if args.min_score is None:
        # With no trained weights shipped yet, nothing would pass the default thresholds; the
        # demo shows the whole path with what the network really outputs.
        from engines.models import SHIPPED_DEFAULT

        if args.model is None and not SHIPPED_DEFAULT.exists():
            args.min_score = 0.0
    code = run_track(str(clip), [out / "demo.jsonl"], out / "demo_overlay.mp4", args)
    if code == 0:
        _note(f"wrote {out / 'demo.jsonl'} and {out / 'demo_overlay.mp4'}")
    return code


def _make_out_dir(out: Path) -> list[Path]:
    """Create the output folder (and its missing parents); returns those it created, deepest
    first, so a run that fails can take them away again."""
    from engines.errors import InputError
    from engines.files import make_folders, write_hint

    if out.exists() and not out.is_dir():
        raise InputError(f"--out-dir '{out}' is a file, not a folder; give a folder name")
    try:
        return make_folders(out)
    except OSError as err:
        raise InputError(f"cannot create the folder '{out}': {err.strerror or err} ({write_hint(err)})") from None


def cmd_run(args: argparse.Namespace) -> int:
    # Live: a camera or stream that drops is reopened; a file may loop.
    args.reconnect = True
    if args.batch_size is not None:
        _note("note: --batch-size is ignored by `run`: a live source (a file played as one too) goes one frame "
              "at a time")
        args.batch_size = None
    tracks = [Path(p) for p in (args.output or [])]
    return run_track(args.source, tracks, Path(args.overlay) if args.overlay else None, args,
                     realtime=True, publish=True)


def cmd_bench(args: argparse.Namespace) -> int:
    """The pipeline with publishing, and the per-stage table. It publishes on a free local port
    unless a port or interface is given (--port, --bind, or publish.port / publish.bind in the
    --config file), so that it never collides with a `run` on the default one."""
    from engines.config import load_yaml
    from streamer.sources import redact_url

    publish = load_yaml(args.config).get("publish") if args.config else None
    given = publish if isinstance(publish, dict) else {}
    if args.port is None and "port" not in given:
        args.port = 0
    if args.bind is None and "bind" not in given:
        args.bind = "127.0.0.1"
    return run_track(args.input, [], None, args, realtime=args.live, publish=True,
                     heading=f"bench: {redact_url(args.input)}, {bench_mode(args.input, args.live)}",
                     report=sys.stdout)


def bench_mode(source: str, live: bool) -> str:
    """How `bench` reads `source`, for its heading: a camera is live whatever --live says, and
    a network stream that is live keeps only its newest frame."""
    from streamer.sources import source_kind

    kind = source_kind(source)
    if kind == "camera":
        return "camera (live: its newest frame each time)"
    what = {"stream": "network stream", "images": "images"}.get(kind, "file")
    if live:
        return f"{what}, live (played at its frame rate)"
    if kind == "stream":
        return f"{what} (a recording as fast as possible; a live one: its newest frame each time)"
    return f"{what} (as fast as possible)"


REPLAY_SPEEDS = (0.01, 1000.0)     # --speed: slower or faster than this is a typo, not a wish


def cmd_listen(args: argparse.Namespace) -> int:
    import math

    from streamer.config import MAX_PORT
    from streamer.listen import listen, tcp_port

    if args.connect is None:       # the port `posecast run` publishes on by default, on this machine
        args.connect = f"tcp://127.0.0.1:{load_pipeline_config().publish.port or DEFAULT_PORT}"
    port = tcp_port(args.connect)
    if port is not None and not 1 <= port <= MAX_PORT:
        raise UsageError(f"--connect: port {port} of '{args.connect}' must be between 1 and {MAX_PORT}")
    if args.count is not None and args.count < 1:
        raise UsageError(f"--count must be >= 1 (got {args.count})")
    if not 0 < args.timeout < math.inf:
        raise UsageError(f"--timeout must be a finite number of seconds > 0 (got {args.timeout:g})")
    from streamer.tracks import is_stdout

    if args.record is not None:
        _check_outputs([Path(args.record)], None)
    # A recording on standard output has it to itself: the figures go to standard error.
    shown = sys.stderr if args.record is not None and is_stdout(args.record) else sys.stdout
    return listen(args.connect, args.topic, Path(args.record) if args.record else None, args.count,
                  args.timeout, not args.no_skeleton, out=shown, announce=_note, through_ends=args.keep_listening)


def cmd_replay(args: argparse.Namespace) -> int:
    import dataclasses

    from streamer.config import MAX_PORT
    from streamer.replay import replay

    # Published as `posecast run` publishes (configs/pipeline.yaml's publish section), unless told.
    shipped = load_pipeline_config().publish
    publish = dataclasses.replace(shipped, **{k: v for k, v in (("bind", args.bind), ("port", args.port),
                                                                 ("encoding", args.encoding)) if v is not None})

    low, high = REPLAY_SPEEDS
    if not low <= args.speed <= high:          # NaN fails this too
        raise UsageError(f"--speed must be a number from {low:g} to {high:g} (got {args.speed:g})")
    if args.port is not None and not 0 <= args.port <= MAX_PORT:
        raise UsageError(f"--port must be between 0 (any free port) and {MAX_PORT} (got {args.port})")
    return replay(Path(args.track), publish.endpoint, publish.encoding, args.speed, publish.hwm,
                  publish.meta_interval_s, announce=_note, loop=args.loop)


def cmd_convert(args: argparse.Namespace) -> int:
    from streamer import batch
    from streamer.convert import convert_track

    items = batch.plan(args.track, args.output, None)
    if len(items) == 1:
        _check_outputs(items[0].tracks, None, items[0].source)
        return convert_track(Path(items[0].source), items[0].tracks, announce=_note)
    _check_batch_outputs(items)
    return batch.run_in_turn(items, lambda item: convert_track(Path(item.source), item.tracks, announce=_note), PROG)


# --- other commands ----------------------------------------------------------------------

def _check_writable(path: Path, streamed: bool = False) -> None:
    """Fail now if `path` cannot be written. The writers open (and so empty) their files one by
    one; an output that fails after another was opened would have emptied that one for nothing,
    so every output's folder is tried with a file of its own first."""
    from engines.errors import InputError
    from engines.files import unwritable_reason

    reason = unwritable_reason(path, streamed=streamed)
    if reason is not None:
        raise InputError(f"cannot write '{path}': {reason}")


def cmd_make_clip(args: argparse.Namespace) -> int:
    from engines.errors import InputError
    from engines.files import write_hint
    from streamer.synthclip import (MAX_FPS, MAX_FRAMES, MAX_SIDE, MIN_FPS, available_memory_bytes,
                                    render_memory_bytes, write_clip)

    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size must look like 1000x1000 (got '{args.size}')") from None
    if w % 2 or h % 2 or not (64 <= w <= MAX_SIDE and 64 <= h <= MAX_SIDE):
        raise UsageError(f"--size must be even, from 64x64 to {MAX_SIDE}x{MAX_SIDE} (got {w}x{h})")
    if not 1 <= args.frames <= MAX_FRAMES:
        raise UsageError(f"--frames must be between 1 and {MAX_FRAMES} (got {args.frames})")
    if not MIN_FPS <= args.fps <= MAX_FPS:       # also refuses nan
        raise UsageError(f"--fps must be between {MIN_FPS:g} and {MAX_FPS:g} (got {args.fps:g})")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0 (got {args.seed})")
    if Path(args.output).suffix.lower() != ".mp4":
        # The clip is always MP4 data: another name would mislead every player and tool.
        raise UsageError(f"the clip is an MP4 video: name it .mp4 (got '{args.output}')")
    _check_writable(Path(args.output))
    needed, available = render_memory_bytes(w, h), available_memory_bytes()
    if available is not None and needed > available:
        # Else the system's OOM killer ends it without a word, part-way.
        raise InputError(f"a {w}x{h} clip needs about {needed / 1e9:.1f} GB of memory to render, and "
                         f"{available / 1e9:.1f} GB is available: give a smaller --size, or free memory; "
                         f"nothing was written")
    try:
        # Written under a temporary name and renamed when whole: no partial clip on failure.
        write_clip(Path(args.output), w, h, args.frames, args.fps, args.seed, progress=sys.stderr.isatty())
    except OSError as err:
        raise InputError(f"cannot write '{args.output}': {err.strerror or err} ({write_hint(err)}); "
                         f"nothing was written") from None
    _note(f"wrote {args.output}: {args.frames} frames, {w}x{h}, {args.fps:g} fps")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from engines.errors import InputError
    from engines.models import resolve_model

    out = Path(args.output)
    if out.suffix.lower() != ".onnx":
        # A model file is read by its name's suffix: an ONNX file named .pt would not load again.
        raise UsageError(f"export writes an ONNX model: name it .onnx (got '{args.output}')")
    _check_writable(out)
    model = resolve_model(args.model)
    for source in (model.onnx_path, model.checkpoint_path):
        if source is not None and out.exists() and out.samefile(source):
            raise InputError(f"'{out}' is the model file itself; give another output name")
    _copy_into_place(model.onnx_path, out)
    _note(f"wrote {args.output} ({model.info.weights}); sha256 {model.onnx_sha256[:16]}")
    return 0


def _copy_into_place(source: Path, dest: Path) -> None:
    """Copy to a temporary file in `dest`'s folder and rename it over `dest` when whole: a failed
    copy (a full disk) leaves no partial file, and whatever `dest` held before stays."""
    import shutil

    from engines.errors import InputError
    from engines.files import replaced_when_done, write_hint

    try:
        with replaced_when_done(dest) as tmp:
            shutil.copyfile(source, tmp)
    except OSError as err:
        raise InputError(f"cannot write '{dest}': {err.strerror or err} ({write_hint(err)}); "
                         f"nothing was written") from None


def cmd_backends(args: argparse.Namespace) -> int:
    from engines.backends import available, choose
    from engines.backends.tensorrt_import import tensorrt_available

    for key, note in available().items():
        print(f"{key:<20} {note}")
    ok, why = tensorrt_available()
    if not ok:
        print(f"{'tensorrt:cuda':<20} unavailable: {why}")
    pick = choose("auto", "auto", True)
    print(f"auto -> {pick.name}:{pick.device}")
    return 0


MAX_BENCH_CALLS = 100_000        # bench-network's --iters and --warmup
DEFAULT_PORT = 5556              # listen's, should configs/pipeline.yaml publish on any free port (0), which no one can guess


def cmd_bench_network(args: argparse.Namespace) -> int:
    from engines.backends import create_backend
    from engines.benchmark import bench_network
    from engines.models import resolve_model
    from streamer.config import MAX_BATCH_SIZE, MAX_THREADS

    # The pipeline's limits: a batch beyond them would only exhaust memory (the OOM killer ends
    # the process without a word), threads beyond them only fight over the cores.
    if not 1 <= min(args.batch) <= max(args.batch) <= MAX_BATCH_SIZE:
        raise UsageError(f"--batch sizes must be between 1 and {MAX_BATCH_SIZE}, as in the pipeline "
                         f"(got {' '.join(map(str, args.batch))})")
    if not 0 <= args.threads <= MAX_THREADS:
        raise UsageError(f"--threads must be between 0 and {MAX_THREADS} (got {args.threads})")
    # A million calls would take half an hour at batch 1 with nothing to show: a typo, not a wish.
    if not (1 <= args.iters <= MAX_BENCH_CALLS and 0 <= args.warmup <= MAX_BENCH_CALLS):
        raise UsageError(f"--iters must be between 1 and {MAX_BENCH_CALLS}, --warmup between 0 and {MAX_BENCH_CALLS} "
                         f"(got {args.iters} and {args.warmup})")
    model = resolve_model(args.model)
    calibration = None
    if args.calibration is not None:
        import dataclasses

        from streamer.calibration import calibration_crops, calibration_used, unread_note

        if args.precision != "int8":
            raise UsageError("--calibration is for --precision int8 (TensorRT builds an int8 engine from it)")
        config = load_pipeline_config()
        inference = dataclasses.replace(config.inference, backend=args.backend, device=args.device,
                                        precision=args.precision)
        if calibration_used(inference):
            calibration = calibration_crops(args.calibration, config.source, model.info.config.input_size)
        else:
            _note(unread_note(args.calibration))
    backend = create_backend(model, args.backend, args.device, args.threads, args.precision, max(args.batch),
                             calibration=calibration)
    # The torch backend runs the checkpoint itself, the others its ONNX export.
    ran = model.checkpoint_path if backend.name == "torch" and model.checkpoint_path else model.onnx_path
    print(f"backend {backend.describe()}; model {ran.name} ({model.info.weights})")
    # ms/frame and frames/s both come from the median call, so one slow call moves neither.
    print(f"{'batch':>6}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'ms/frame':>10}{'frames/s':>10}")
    for b in args.batch:
        r = bench_network(backend, model.info.config.input_size, b, args.iters, args.warmup)
        print(f"{b:>6}{r.p50_ms:>10.2f}{r.p99_ms:>10.2f}{r.mean_ms:>10.2f}{r.p50_ms / b:>10.2f}{r.frames_per_s:>10.1f}")
    return 0


# --- wiring ------------------------------------------------------------------------------

def version_line() -> str:
    """What `posecast --version` prints: what a bug report needs to say which Posecast ran where."""
    import importlib.metadata
    import platform

    try:
        version = importlib.metadata.version(PROG)
    except importlib.metadata.PackageNotFoundError:
        version = "(not installed: run from its source folder)"
    return f"{PROG} {version} (Python {platform.python_version()}, {platform.system()} {platform.machine()})"


class VersionAction(argparse.Action):
    """--version, worked out only when asked: the package metadata costs every other command time."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0,
                         help="show Posecast's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Real-time monocular 3D human pose estimation.")
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("track", help="estimate poses in a video, stream, camera or image folder; write tracks",
                       description="Estimate the 3D pose of the person in every frame of INPUT and write track "
                                   "files (format by extension: .jsonl, .csv, .npz, .bvh) and/or an overlay video. "
                                   "Several inputs are tracked in turn, each into outputs of its own: put {name} "
                                   "(the input's file name without its extension, an image folder's name) in every "
                                   "output's path, as in "
                                   "`posecast track clips/*.mp4 -o 'tracks/{name}.jsonl'`.",
                       epilog="INPUT: a video file, an rtsp/http(s) URL, a camera index (0) or /dev/videoN, "
                              "an image folder or a glob ('frames/*.png'). Exit codes: 0 done, 1 a stage failed, "
                              "2 bad input/config/model, 3 frames were damaged or missing, 130 interrupted (143 SIGTERM, "
                              "129 SIGHUP), 141 the reader of its output went away. With several inputs an input "
                              "that fails is said and the others go on; the exit code is then the first failing "
                              "input's (3 only where every failing input's was 3), and a stop (Ctrl-C, a signal), "
                              "or a backend that cannot start, starts no further input.")
    p.add_argument("input", nargs="+", metavar="INPUT",
                   help="video file, URL, camera index or device, image folder or glob; several are tracked in turn")
    p.add_argument("-o", "--output", action="append", metavar="OUT",
                   help="track file: .jsonl (the stream's messages), .csv, .npz or .bvh (an animated "
                        "skeleton for Blender and other animation tools), or - for JSONL on standard output; "
                        "may be repeated")
    p.add_argument("--overlay", metavar="MP4", help="write the input with the 2D skeletons drawn (H.264)")
    p.add_argument("--skip-done", action="store_true",
                   help="skip an input whose outputs an earlier run wrote to the input's end (its .jsonl, .csv or "
                        ".npz track records how its run ended), none older than the input, with this model and "
                        "axes: a batch stopped part-way goes on where it stopped")
    _add_run_options(p, "track")
    p.set_defaults(func=cmd_track)

    p = sub.add_parser("demo", help="render the built-in demo clip and track it (no download)",
                       description="Render Posecast's synthetic demo clip (once, cached) and run `track` on it, "
                                   "writing demo.jsonl and demo_overlay.mp4.")
    p.add_argument("--out-dir", default="posecast-demo", help="where to write the results (default: posecast-demo)")
    _add_run_options(p, "demo")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="live: estimate poses from a camera, stream or file and publish them (ZeroMQ)",
                       description="Run live and publish every pose over ZeroMQ (docs/protocol.md). Cameras and "
                                   "streams keep only their newest frame; a file is played at its own frame rate, "
                                   "as a live source. Optionally also write tracks and an overlay.",
                       epilog="SOURCE: a camera index (0) or /dev/videoN, an rtsp/http(s) URL, or a video file. "
                              "Exit codes: 0 done, 1 a stage failed, 2 bad input/config/model or the port in use, "
                              "3 frames were damaged or missing, 130 interrupted (143 SIGTERM, 129 SIGHUP), 141 the "
                              "reader of its output went away.")
    p.add_argument("source", help="camera index or device, URL, or video file (played in real time)")
    p.add_argument("-o", "--output", action="append", metavar="OUT",
                   help="also record a track file (- : JSONL on standard output); may be repeated")
    p.add_argument("--overlay", metavar="MP4", help="also write the overlay video")
    p.add_argument("--loop", action="store_true", help="a file: play it again from the start at its end, forever")
    p.add_argument("--preview", action="store_true",
                   help="show a window with the frames and skeletons (needs the 'preview' extra: pygame); "
                        "closing it ends the run")
    _add_run_options(p, "run")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("bench", help="measure the pipeline: per-stage times, throughput, capture-to-publish latency",
                       description="Run the whole pipeline on INPUT, publishing (to a free local port unless "
                                   "--port, --bind or a --config file's publish.port / publish.bind says "
                                   "otherwise), and print "
                                   "per-stage times (p50, p95), throughput, capture-to-publish latency and dropped "
                                   "frames. --live plays a file at its frame rate, as a live source.")
    p.add_argument("input", help="video file, URL, camera or image folder")
    p.add_argument("--live", action="store_true", help="play a file at its own frame rate (live latency)")
    _add_run_options(p, "bench")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("listen", help="subscribe to a pose stream: show rate, latency and a text skeleton, or record it",
                       description="Subscribe to a Posecast stream and show it (rate, latency, a text drawing of "
                                   "the skeleton), or record it to a track file, until the publisher's end message "
                                   "(a file's last frame, or the publisher stopped).",
                       epilog="Messages that are not Posecast's are skipped and counted. Exit codes: 0 done, "
                              "2 bad arguments, no Posecast messages, or a recorded stream that changed (another source "
                              "or meta), 3 a recording that lost messages on the way (gaps in seq), 130 interrupted "
                              "(143 SIGTERM, "
                              "129 SIGHUP), 141 the reader of a recording written into a pipe (--record -, or a named "
                              "pipe) went away; an interrupted recording is complete up to the last message.")
    p.add_argument("--connect", help="publisher endpoint (default: tcp://127.0.0.1 on the port of configs/pipeline.yaml, "
                                     "5556, where `posecast run` publishes)")
    p.add_argument("--topic", default=POSE_TOPIC, help=f"topic prefix, e.g. {POSE_TOPIC}cam0 (default: every source)")
    p.add_argument("--record", metavar="OUT", help="write the stream to a track file (.jsonl, .csv, .npz, .bvh; - : "
                                                    "JSONL on standard output, the figures then on standard error)")
    p.add_argument("--count", type=int, help="stop after this many pose messages (>= 1)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="stop after this many seconds without a Posecast message (> 0; default 10)")
    p.add_argument("--no-skeleton", action="store_true", help="do not draw the text skeleton")
    p.add_argument("--keep-listening", action="store_true",
                   help="go on after the publisher's end message (default: stop there), e.g. to record its next "
                        "run too; --timeout's silence, --count or Ctrl-C then ends it")
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("replay", help="publish a recorded .jsonl track again at its original pace",
                       description="Publish a .jsonl track file over ZeroMQ again, at its original pace: a video "
                                   "file's or a network stream's track at the video's own times (t_media), a "
                                   "camera's at the times its frames were read (t_capture).",
                       epilog="Exit codes: 0 done, 2 bad arguments, a track that cannot be read or the port in use, "
                              "130 interrupted (143 SIGTERM, 129 SIGHUP).")
    p.add_argument("track", help="a .jsonl track file")
    p.add_argument("--bind", help="interface to publish on (default: configs/pipeline.yaml's, 127.0.0.1)")
    p.add_argument("--port", type=int, help="publishing port, 1 to 65535, or 0 for any free one (it is said) "
                                             "(default: configs/pipeline.yaml's, 5556)")
    p.add_argument("--encoding", choices=_choices(PublishConfig, "encoding"),
                   help="default: configs/pipeline.yaml's, msgpack")
    p.add_argument("--speed", type=float, default=1.0,
                   help=f"playback speed factor, {REPLAY_SPEEDS[0]:g} to {REPLAY_SPEEDS[1]:g} (default 1)")
    p.add_argument("--loop", action="store_true",
                   help="publish it again from its start after its end, until Ctrl-C (each pass announced by "
                        "its meta, as a publisher that started again)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("convert", help="write a recorded .jsonl track again as .csv, .npz or .bvh",
                       description="Write a .jsonl track file (from track -o, run -o or listen --record) again in "
                                   "other formats, without the video or the network, by the writers track -o uses "
                                   "(from the numbers as the messages hold them: 0.1 mm, 0.01 px). Several tracks "
                                   "are converted in turn, each into outputs of its own: put {name} (the track's "
                                   "file name without its extension) in every output's path, as in "
                                   "`posecast convert tracks/*.jsonl -o 'bvh/{name}.bvh'`.",
                       epilog="Exit codes: 0 done, 2 bad arguments, a track that cannot be read or an output that "
                              "cannot be written, 130 interrupted (143 SIGTERM, 129 SIGHUP), 141 the reader of an "
                              "output written into a named pipe went away. With several tracks a track that fails "
                              "is said and the others go on; the exit code is then the first failing track's.")
    p.add_argument("track", nargs="+", help="a .jsonl track file; several are converted in turn")
    p.add_argument("-o", "--output", action="append", required=True, metavar="OUT",
                   help="output track file: .csv, .npz, .bvh (or .jsonl; - : JSONL on standard output); may be repeated")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("make-clip", help="render a synthetic test clip of a walking person",
                       description="Render the synthetic walking-person clip at any size (for benchmarks and tests).")
    p.add_argument("output", help="output .mp4")
    p.add_argument("--size", default="640x480",
                   help="WIDTHxHEIGHT, even numbers from 64x64 to 4096x4096 (default 640x480; rendering takes "
                        "about 0.3 GB of memory per million pixels: 5 GB at 4096x4096)")
    p.add_argument("--frames", type=int, default=90, help="1 to 100000 (default 90)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate, 1 to 240 (default 30)")
    p.add_argument("--seed", type=int, default=0, help="picks the clothes and the room, >= 0 (default 0)")
    p.set_defaults(func=cmd_make_clip)

    p = sub.add_parser("export", help="write the model as ONNX (dynamic batch, Posecast metadata)",
                       description="Export a model (default: the built-in one) to ONNX for ONNX Runtime or TensorRT.")
    p.add_argument("-o", "--output", required=True, help="output .onnx")
    p.add_argument("--model", metavar="FILE", help="a Posecast .pt or .onnx model (default: the built-in model)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("backends", help="list the inference backends present here",
                       description="List inference backends and devices present, and what --backend auto picks.")
    p.set_defaults(func=cmd_backends)

    p = sub.add_parser("bench-network", help="time the network alone (latency and throughput per batch size)",
                       description="Time the network alone on random crops: p50/p99/mean latency per call, "
                                   "and ms per frame and frames/s from the p50.")
    p.add_argument("--model", metavar="FILE", help="a Posecast .onnx or .pt model (default: the built-in model)")
    p.add_argument("--backend", default="auto", choices=_choices(InferenceConfig, "backend"),
                   help="inference backend (default: auto, the fastest present)")
    p.add_argument("--device", default="auto", choices=_choices(InferenceConfig, "device"),
                   help="where the network runs (default: auto)")
    p.add_argument("--threads", type=int, default=2, metavar="N",
                   help="CPU threads for the network, 0 (the runtime's default) to 256 (default 2)")
    p.add_argument("--precision", default="fp16", choices=_choices(InferenceConfig, "precision"),
                   help="precision on a GPU (TensorRT; torch on CUDA halves for fp16) (default: fp16; the CPU runs fp32)")
    p.add_argument("--calibration", metavar="SOURCE",
                   help="TensorRT int8 only: a video or image folder of typical scenes to calibrate with")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], metavar="B",
                   help="batch sizes to time, 1 to 256 each (default: 1 8)")
    p.add_argument("--iters", type=int, default=200, metavar="N", help="timed calls per batch size (default 200)")
    p.add_argument("--warmup", type=int, default=20, metavar="N",
                   help="untimed calls first, per batch size (default 20)")
    p.set_defaults(func=cmd_bench_network)

    # Listed here for `posecast --help`; their arguments are parsed by train/ (see DELEGATED).
    sub.add_parser("train", add_help=False, help="train the network on a recipe (configs/train/*.yaml)")
    sub.add_parser("evaluate", add_help=False, help="evaluate a model: MPJPE, PA-MPJPE, PCK per alignment method")
    for command in sub.choices.values():
        command.set_defaults(command_parser=command)     # whose usage an unknown option is told with
    return parser


# Commands whose whole argument list goes to a module of train/, imported only when run.
DELEGATED = {"train": "train.train", "evaluate": "train.evaluate"}


def expanded_pattern_note(args: list[str]) -> str | None:
    """Several images among the arguments: most likely a pattern the shell expanded
    (`posecast track frames/*.png`), which only quoting passes on whole as one input."""
    from streamer.sources.images import IMAGE_EXTENSIONS

    images = [a for a in args if Path(a).suffix.lower() in IMAGE_EXTENSIONS and os.path.isfile(a)]
    if len(images) < 2:
        return None
    pattern = Path(images[0]).parent / f"*{Path(images[0]).suffix}"
    return (f"{len(images)} image files were given, but they are read as one input: give their folder, or a "
            f"pattern in quotes ('{pattern}') so that posecast, not the shell, expands it")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:
        import importlib

        return importlib.import_module(DELEGATED[argv[0]]).main(argv[1:], prog=f"{PROG} {argv[0]}")
    try:
        args, unknown = build_parser().parse_known_args(argv)
        if unknown and args.command in ("track", "convert") and not any(a.startswith("-") for a in unknown):
            # Inputs after an option (`track a.mp4 -o 'x/{name}.jsonl' b.mp4`): argparse takes
            # one run of positionals only, and a user need not know that.
            (args.input if args.command == "track" else args.track).extend(unknown)
            unknown = []
        if unknown:
            # The command's own usage and name, not the top level's ("posecast track: error: ...").
            args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:
        # A file named like an option ('-take1.mp4') gets argparse's "input is required" or
        # "unrecognized arguments"; say what happened to it.
        before = argv[:argv.index("--")] if "--" in argv else argv      # after "--" nothing is an option
        named = [a for a in before if a.startswith("-") and a != "-" and os.path.exists(a)]
        if exc.code == 2 and named:
            print(f"{PROG}: '{named[0]}' was read as an option; to give that file, write ./{named[0]} "
                  f"(or put -- before it)", file=sys.stderr)
        elif exc.code == 2 and (note := expanded_pattern_note(before)) is not None:
            print(f"{PROG}: {note}", file=sys.stderr)
        raise
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format=f"{PROG}: %(levelname)s: %(message)s")
    return run_command(PROG, lambda: args.func(args), interrupted=None)


if __name__ == "__main__":
    sys.exit(main())
