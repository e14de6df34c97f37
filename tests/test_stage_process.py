"""How a stage process reports a failure no one foresaw (streamer/process.py): the parent shows
the one line it sends, so that line must say which stage failed and what to do."""

from __future__ import annotations

import logging
import multiprocessing as mp

import pytest

from streamer.process import stage_main
from streamer.stages.base import Control


class _Fails:
    """A stage whose run raises `exc` (built in the stage's process, as a real stage's error is)."""

    def __init__(self, exc: BaseException, control: Control, reporter: object) -> None:
        self.exc = exc

    def run(self) -> None:
        raise self.exc


def _report_of(stage: str, exc: BaseException) -> tuple[dict, int | None]:
    ctx = mp.get_context("spawn")
    control = Control.shared(ctx)
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=stage_main, args=(stage, _Fails, {"exc": exc}, control, send, logging.WARNING))
    proc.start()
    send.close()
    try:
        assert recv.poll(60), "the stage sent no report"
        kind, said_stage, payload = recv.recv()
    finally:
        proc.join(30)
        recv.close()
    assert (kind, said_stage) == ("error", stage)
    return payload, proc.exitcode


def test_an_unforeseen_error_names_its_stage_on_one_line_and_keeps_its_traceback() -> None:
    # It was "RuntimeError: ..." alone, over as many lines as the error's message had: no word of
    # which stage failed, or what to do.
    payload, code = _report_of("align", RuntimeError("matrix is singular\n  at step 3"))
    assert code == 1 and payload["exit_code"] == 1
    assert payload["message"] == ("the align stage failed (RuntimeError: matrix is singular at step 3); the run was "
                                  "stopped. Posecast did not foresee this error: please report it with the "
                                  "traceback above")
    assert "RuntimeError: matrix is singular" in payload["traceback"]


def test_running_out_of_memory_in_a_stage_is_one_line_without_a_traceback() -> None:
    payload, code = _report_of("infer", MemoryError())
    assert code == 1 and payload["exit_code"] == 1
    assert payload["message"] == ("the infer stage ran out of memory; the run was stopped (free memory: close other "
                                  "programs, or give a smaller input)")
    assert payload["traceback"] is None


@pytest.mark.parametrize("length", [10, 5000])
def test_an_unforeseen_errors_words_are_cut_to_fit_one_line(length: int) -> None:
    from streamer.process import BUG_SAID_CHARS, bug_message

    line = bug_message("output", ValueError("x" * length))
    assert "\n" not in line
    assert ("x" * length in line) == (length <= BUG_SAID_CHARS)
    assert line.startswith("the output stage failed (ValueError: ")
