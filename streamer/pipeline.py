"""The parent process: start the stages, watch them, end them all, clean up.

    capture ──► infer ──► align ──► output
      (ring of frames in shared memory; only slot numbers travel between processes)

Every run ends one of four ways, and each ends every process and removes the shared memory and
the socket folder:
- end of input: END flows down the chain, each stage finishes its frames and exits;
- Ctrl-C (or SIGTERM): capture stops reading, the frames in flight are finished and written;
  a second Ctrl-C aborts at once;
- a stage fails: it reports one line and exits non-zero; the others are aborted;
- a stage dies without a word (killed, segfault): its exit is noticed and the others are aborted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from engines.environment import environ_default
from engines.models import ModelArtifact
from engines.stop_signals import STOP_SIGNALS
from streamer.config import PipelineConfig
from streamer.packets import RunSummary
from streamer.process import stage_main
from streamer.protocol import END_TOPIC, META_TOPIC, POSE_TOPIC
from streamer.refiner import TemporalRefiner
from streamer.ring import unlink_ring
from streamer.stage_server import (DEATH_WAIT_S, ORPHAN_EXIT_CODE, SERVER_TITLE, current_folder_off_the_server_path,
                                   server_death, stage_context)
from streamer.stages.align import AlignStage
from streamer.stages.base import Control
from streamer.stages.capture import CaptureStage
from streamer.stages.infer import InferStage
from streamer.stages.output import OutputStage

log = logging.getLogger(__name__)

STAGES = ("capture", "infer", "align", "output")
STOP_GRACE_S = 10.0      # Ctrl-C: how long frames in flight may take before the run is aborted
ABORT_GRACE_S = 3.0      # abort: how long stages may take to exit before they are terminated

EXIT_OK, EXIT_FAILED, EXIT_INPUT_DAMAGED = 0, 1, 3      # interrupted: 128 + the signal's number
QUIET_TRACKER = "ignore:resource_tracker:UserWarning"      # a -W option: see start_resource_tracker_deaf_to_hangups


@dataclass
class RunRequest:
    source: str
    model: ModelArtifact
    config: PipelineConfig
    tracks: list[Path]
    overlay: Path | None = None
    progress: bool = True
    log_level: int = logging.WARNING
    announce: Callable[[str], None] | None = None    # told what a user should know while it runs
    realtime: bool = False                           # play files at their frame rate, as live sources
    preview: bool = False                            # show a window with the live result
    refiner: TemporalRefiner | None = None           # a file's learned temporal refiner (streamer/refiner.py)
    live_refiner: TemporalRefiner | None = None      # a live source's (causal: past frames only)


@dataclass
class RunResult:
    exit_code: int
    error: str | None = None               # the one line to show when the run failed
    error_stage: str | None = None
    traceback: str | None = None
    error_quiet: bool = False              # an error the user caused on purpose, said by its exit code alone
    interrupted: bool = False
    summary: RunSummary | None = None      # from the output stage, when it finished
    backend: str | None = None
    endpoint: str | None = None            # where the stream was published, if it was
    overlay_opened: bool = False           # the output stage made the overlay video's file
    outputs_begun: bool = False            # the output stage took its first frame (and made its files)
    stage_exit_codes: dict[str, int | None] = field(default_factory=dict)


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Stage processes started inside get numpy's BLAS on one thread, unless the user set
    OPENBLAS_NUM_THREADS. The stages already run in parallel beside ONNX Runtime's own threads: the
    temporal refiner's matrix products, spread over every core too, cost files a quarter of their
    frame rate on two cores (docs/performance.md, "The temporal refiner")."""
    with environ_default("OPENBLAS_NUM_THREADS", "1"):     # the stage server (or a spawned stage) copies it
        yield


@contextlib.contextmanager
def main_module_hidden() -> Iterator[None]:
    """A stage process, spawned or forked from the stage server, first imports its parent's main
    module, to find anything pickled from it: for `posecast` that is the whole command line
    (argparse, the batch planner, the config loader). The stages are pickled from their own
    modules and need none of it; it cost each of the four about a tenth of a second of CPU at
    every input (docs/performance.md, "Several inputs"). Processes started inside are told of no
    main module."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def start_resource_tracker_deaf_to_hangups() -> None:
    """Starts multiprocessing's resource tracker (the stages' semaphores and ring are registered
    with it) with SIGHUP blocked, which it keeps: it ignores SIGINT and SIGTERM itself, but a
    closed terminal's SIGHUP to the process group killed it mid-run, and the tracker started
    again in its place printed a traceback for each of the run's semaphores after our one line.
    A hangup that comes meanwhile waits here, and then stops the run as usual.

    It is also told to keep quiet about what it cleans up: that is only ever left to it when this
    process was killed outright (SIGKILL, the OOM killer), and then it removed the run's semaphores
    and ring as it should but printed four lines of "UserWarning: resource_tracker: There appear to
    be 12 leaked semaphore objects" after the shell's "Killed"."""
    from multiprocessing import resource_tracker

    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    warnoptions = list(sys.warnoptions)
    sys.warnoptions.append(QUIET_TRACKER)         # its command line is made from this process's flags
    try:
        resource_tracker.ensure_running()
    finally:
        sys.warnoptions[:] = warnoptions
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def killed_how(signum: int) -> str:
    """How a stage that died of a signal died, for the run's one line. SIGKILL is what the system
    sends a process when memory runs out (the OOM killer), and a user can act on that."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        return f"was killed by signal {signum}"
    if signum == signal.SIGKILL:
        return (f"was killed by signal {signum} ({name}: by another program, or by the system when memory ran out; "
                "then close other programs or give a smaller input)")
    return f"was killed by signal {signum} ({name})"


def server_died_how(signum: int) -> str:
    """The start of the run's line where the process the stages are forked from died mid-run."""
    how = killed_how(signum) if signum else "exited"
    return f"the stages' server process ({SERVER_TITLE}) {how}"


class StageStartError(Exception):
    """A stage process could not be started: the run ends with this line and nothing else."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        server = server_death(DEATH_WAIT_S)
        if server is not None:
            why, then = server_died_how(server), "run the command again"
        elif isinstance(cause, OSError):
            # Out of processes or file descriptors for this user (EAGAIN, EMFILE), or of memory.
            why = cause.strerror or f"{type(cause).__name__}: {cause}"
            then = "close other programs, or raise the limits (ulimit -u, ulimit -n), and run the command again"
        else:
            why, then = f"the stages' server process ({SERVER_TITLE}) stopped answering", "run the command again"
        super().__init__(f"the {stage} stage could not be started ({why}); the run was stopped: {then}")
        self.stage = stage


def restart_dead_resource_tracker_quietly() -> None:
    """A resource tracker killed mid-run (a SIGKILL to it, the OOM killer) is started again by
    the first register or unregister after it, the ring's removal in `_shutdown`: the new one knows
    none of the run's semaphores, and printed a warning that the old one died and a KeyError
    traceback for each semaphore after the run's summary. Each semaphore is removed by its
    finaliser and the ring by `unlink_ring` all the same, so a tracker that died is started again
    here, with nowhere to print. (A live one is only probed.)"""
    try:
        saved = os.dup(2)
    except OSError:
        return                                    # no stderr (2>&-): nowhere to print anyway
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)                       # the new tracker's stderr is the one we have now
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")       # "resource_tracker: process died unexpectedly"
            start_resource_tracker_deaf_to_hangups()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class Pipeline:
    def __init__(self, request: RunRequest) -> None:
        self.request = request
        self.ctx = stage_context()
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.ring_name = f"posecast-{token}"
        # Made in `run`, once the stop signals are ours (see there).
        self.ipc_dir: Path | None = None
        self.control: Control | None = None
        self.procs: dict[str, Any] = {}
        self.conns: dict[Any, str] = {}
        self.pidfds: dict[str, int] = {}      # each stage, told apart from its exit as its server reports it
        self.result = RunResult(EXIT_OK)
        self._interrupts = 0
        self._signal = signal.SIGINT
        self._stop_deadline = float("inf")
        self._reported: set[str] = set()      # stages that explained their own failure

    @property
    def _events(self) -> Control:
        if self.control is None:
            raise RuntimeError("the pipeline's events exist once run() has made them")
        return self.control

    def endpoint(self, stage: str) -> str:
        assert self.ipc_dir is not None, "endpoints exist once run() has made the socket folder"
        return f"ipc://{self.ipc_dir / stage}.sock"

    def _stage_kwargs(self, free_slots: Any) -> dict[str, tuple[Any, dict[str, Any]]]:
        r = self.request
        info = r.model.info
        model_meta = {"weights": info.weights, "trained": info.trained, "file": r.model.onnx_path.name}
        stages = {
            "capture": (CaptureStage, dict(source=r.source, config=r.config, ring_name=self.ring_name,
                                           free_slots=free_slots, out_endpoint=self.endpoint("infer"),
                                           realtime=r.realtime)),
            "infer": (InferStage, dict(model=r.model, config=r.config, in_endpoint=self.endpoint("infer"),
                                       out_endpoint=self.endpoint("align"))),
            "align": (AlignStage, dict(model_config=info.config, config=r.config, refiner=r.refiner,
                                       live_refiner=r.live_refiner,
                                       in_endpoint=self.endpoint("align"), out_endpoint=self.endpoint("output"))),
            "output": (OutputStage, dict(model_config=info.config, model_meta=model_meta, tracks=r.tracks,
                                         overlay=r.overlay, publish=r.config.publish,
                                         coordinates=r.config.coordinates, free_slots=free_slots,
                                         in_endpoint=self.endpoint("output"), progress=r.progress,
                                         preview=r.preview)),
        }
        # A live capture waits for every stage after it to mark itself ready (Control.ready).
        stages["capture"][1]["stages_after"] = len(stages) - 1
        return stages

    def run(self) -> RunResult:
        # A stop signal that is ignored already stays ignored: `nohup posecast run` must outlive
        # its terminal. SIGHUP otherwise means the terminal closed: stop cleanly.
        old = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS
               if signal.getsignal(sig) is not signal.SIG_IGN}
        try:
            # The first event starts multiprocessing's resource tracker, a child that a Ctrl-C to
            # the process group may follow at once; our handler is in place by then. (The tracker
            # unblocks SIGINT and SIGTERM in this process once started, so the block below comes
            # after it.)
            start_resource_tracker_deaf_to_hangups()
            self.control = Control.shared(self.ctx)
            self._on_signal_before_events()
            # A new stage process spends its first second importing, before stage_main can tell it
            # to leave the stop signals to us; a Ctrl-C then would kill it with a traceback. Started
            # with them blocked, it holds them until stage_main ignores them (which drops them);
            # here they wait until the stages are started, and then stop the run as usual.
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                self.ipc_dir = Path(tempfile.mkdtemp(prefix="posecast-"))
                free_slots = self.ctx.Semaphore(0)   # capture releases one per ring slot once it sizes the ring
                with one_blas_thread(), main_module_hidden(), current_folder_off_the_server_path():
                    for name, (cls, kwargs) in self._stage_kwargs(free_slots).items():
                        recv, send = self.ctx.Pipe(duplex=False)
                        proc = self.ctx.Process(target=stage_main, name=f"posecast-{name}",
                                                args=(name, cls, kwargs, self.control, send, self.request.log_level,
                                                      self.ipc_dir))
                        try:
                            proc.start()
                        except (OSError, EOFError) as exc:
                            recv.close()
                            send.close()
                            raise StageStartError(name, exc) from None
                        send.close()
                        self.procs[name] = proc
                        self._watch_pid(name, proc.pid)
                        self.conns[recv] = name
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            self._supervise()
        except StageStartError as exc:
            self._events.abort.set()          # the stages started before it
            self.result.error = str(exc)
            self.result.error_stage = exc.stage
            self.result.exit_code = EXIT_FAILED
        finally:
            self._shutdown()
            for sig, handler in old.items():
                signal.signal(sig, handler)
        return self._finish()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._interrupts += 1
        self.result.interrupted = True
        self._signal = signum
        if self.control is None:         # before the events exist: _on_signal_before_events acts
            return
        if self._interrupts == 1:
            self._events.stop.set()
            self._stop_deadline = time.monotonic() + STOP_GRACE_S
        else:
            self._events.abort.set()

    def _on_signal_before_events(self) -> None:
        """Acts on stop signals that came while the events were being made."""
        if self._interrupts:
            self._events.stop.set()
            self._stop_deadline = time.monotonic() + STOP_GRACE_S
        if self._interrupts > 1:
            self._events.abort.set()

    def _supervise(self) -> None:
        abort_deadline = float("inf")
        sentinels = {p.sentinel: name for name, p in self.procs.items()}
        live_conns = dict(self.conns)
        while sentinels or live_conns:
            ready = wait(list(sentinels) + list(live_conns), timeout=0.2)
            # Reports before exits: a stage's last words explain its exit code.
            for conn in [o for o in ready if o in live_conns]:
                self._drain(conn, live_conns)
            for obj in [o for o in ready if o in sentinels]:
                name = sentinels.pop(obj)
                for conn in [c for c, n in live_conns.items() if n == name]:
                    self._drain(conn, live_conns)
                self._on_exit(name)
            now = time.monotonic()
            if self._events.stop.is_set() and now > self._stop_deadline and not self._events.abort.is_set():
                log.warning("frames in flight did not finish in %.0f s; aborting", STOP_GRACE_S)
                self._events.abort.set()
            if self._events.abort.is_set():
                if abort_deadline == float("inf"):
                    abort_deadline = now + ABORT_GRACE_S
                elif now > abort_deadline:
                    return   # stragglers are terminated by _shutdown

    def _drain(self, conn: Any, live_conns: dict[Any, str]) -> None:
        """Handle every report waiting on `conn`; forget it once its stage has closed it."""
        try:
            while conn.poll():
                kind, stage, payload = conn.recv()
                self._on_report(kind, stage, payload)
        except (EOFError, OSError):
            live_conns.pop(conn, None)

    def _on_report(self, kind: str, stage: str, payload: Any) -> None:
        if kind == "error":
            self._reported.add(stage)
            if self.result.error is None:
                self.result.error = payload["message"]
                self.result.error_stage = stage
                self.result.traceback = payload.get("traceback")
                self.result.exit_code = payload["exit_code"]
                self.result.error_quiet = bool(payload.get("quiet"))
            elif payload.get("also"):
                # Outputs that failed before another stage ended the run: said in its line too.
                self.result.error += f"; also, {payload['message']}"
            if payload.get("drained"):
                # The failing stage already ended its input cleanly: let the frames in flight finish.
                self._events.stop.set()
                self._stop_deadline = time.monotonic() + STOP_GRACE_S
            else:
                self._events.abort.set()
        elif kind == "summary":
            self.result.summary = payload
        elif kind == "backend":
            self.result.backend = payload
        elif kind == "overlay_opened":
            self.result.overlay_opened = True
        elif kind == "first_frame":
            self.result.outputs_begun = True
        elif kind == "publishing":
            self.result.endpoint = payload
            if self.request.announce is not None:
                self.request.announce(f"publishing on {payload} (topics {POSE_TOPIC}*, {META_TOPIC}*, {END_TOPIC}*)")
        elif kind == "waiting_subscribers":
            wanted, present = payload
            if self.request.announce is not None:
                self.request.announce(f"waiting for {wanted - present} more subscriber(s) to the poses before the first "
                                      f"frame (--wait-subscribers {wanted}; Ctrl-C to stop)")

    def _on_exit(self, name: str) -> None:
        proc = self.procs[name]
        proc.join(timeout=1.0)
        code = proc.exitcode
        self.result.stage_exit_codes[name] = code
        if code != 0 and name not in self._reported and not self._events.abort.is_set():
            # Died without reporting (killed, crashed in native code): nothing else will tell.
            self._events.abort.set()
            if self.result.error is None:
                server = server_death(DEATH_WAIT_S) if code == ORPHAN_EXIT_CODE else None
                if server is not None:
                    self.result.error = f"{server_died_how(server)}; the run was stopped"
                else:
                    how = killed_how(-code) if code is not None and code < 0 else f"exited with code {code}"
                    self.result.error = f"the {name} stage {how}; the run was stopped"
                if name == "output":
                    self.result.error += self._lost_with_the_output_stage()
                self.result.error_stage = name
                self.result.exit_code = EXIT_FAILED

    def _watch_pid(self, name: str, pid: int) -> None:
        """A forked stage's exit is told to us by its server (streamer/stage_server.py): a server
        that dies tells every stage ended (ORPHAN_EXIT_CODE) while they may still run, and a
        stage stuck then (a full pipe, a hung read) was never killed and outlived the command. A
        pidfd sees the stage itself (Linux; elsewhere the server's word is all there is)."""
        if not hasattr(os, "pidfd_open"):
            return
        try:
            self.pidfds[name] = os.pidfd_open(pid)
        except OSError:                           # already ended and reaped, or no pidfd (old kernel)
            pass

    def _kill_orphans(self, killed: set[str]) -> None:
        """Stages said ended by a dead server that still run after the grace are killed (those in
        `killed` were already)."""
        deadline = time.monotonic() + ABORT_GRACE_S
        for name, fd in self.pidfds.items():
            if name not in killed and not wait([fd], timeout=max(0.0, deadline - time.monotonic())):
                log.warning("the %s stage did not exit; killing it", name)
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                if name == "output":
                    self._output_killed()
        for fd in self.pidfds.values():
            os.close(fd)
        self.pidfds.clear()

    def _output_killed(self) -> None:
        """An output stage killed for not ending in time (stuck writing: a named pipe's reader
        that stopped reading, a hung network disk) finished none of its files: the run failed,
        and says so, rather than that everything processed was written."""
        lost = self._lost_with_the_output_stage()
        if self.result.error is None:
            self.result.error = "the output stage did not finish writing in time and was killed" + lost
            self.result.error_stage = "output"
            self.result.exit_code = EXIT_FAILED
        else:
            self.result.error += lost

    def _lost_with_the_output_stage(self) -> str:
        """What a killed output stage could not finish, for its error line. An .npz or .bvh is
        written whole at the end; an overlay video gets its index at the end, and without one no player
        opens it, so the unfinished file is removed rather than left looking like a video."""
        from streamer.tracks import WHOLE_FILE_SUFFIXES

        lost = [p.name for p in self.request.tracks if p.suffix.lower() in WHOLE_FILE_SUFFIXES]
        clause = ""
        if lost:
            clause += (f"; {', '.join(lost)} could not be written (.npz and .bvh are written at the end of a run: use "
                       ".jsonl or .csv for a track that survives a crash)")
        overlay = self.request.overlay
        if overlay is not None and self.result.overlay_opened and overlay.is_file():
            # A file the stage never opened (killed before its input began) is the user's: kept.
            Path(os.path.realpath(overlay)).unlink(missing_ok=True)
            clause += f"; the overlay video {overlay.name} was unfinished and no player could open it, so it was removed"
        return clause

    def _shutdown(self) -> None:
        killed: set[str] = set()
        for name, proc in self.procs.items():
            proc.join(timeout=ABORT_GRACE_S if self._events.abort.is_set() else 30.0)
        for name, proc in self.procs.items():
            if proc.is_alive():
                # Stages ignore SIGTERM (see process.py), so a straggler gets SIGKILL.
                log.warning("the %s stage did not exit; killing it", name)
                proc.kill()
                killed.add(name)
                proc.join(timeout=2.0)
                if name == "output":
                    self._output_killed()
            self.result.stage_exit_codes.setdefault(name, proc.exitcode)
        self._kill_orphans(killed)
        for conn in self.conns:
            conn.close()
        if self.control is not None:              # else no tracker was started
            restart_dead_resource_tracker_quietly()
        unlink_ring(self.ring_name)
        if self.ipc_dir is not None:
            shutil.rmtree(self.ipc_dir, ignore_errors=True)

    def _finish(self) -> RunResult:
        res = self.result
        if res.error is not None:
            return res
        if res.interrupted:
            res.exit_code = 128 + int(self._signal)     # 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP
        elif res.summary is None:
            res.exit_code = EXIT_FAILED
            res.error = "the run ended without a result from the output stage"
        elif res.summary.end.corrupt > 0:
            res.exit_code = EXIT_INPUT_DAMAGED
        return res
