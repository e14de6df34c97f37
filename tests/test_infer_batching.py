"""How the inference stage groups frames into batches (InferStage._collect).

A file's frames must be grouped the same way whatever the timing: each batch's crops come from the
previous batch's last result, so a batch boundary that moves with the machine's load changes the
track. Live sources take only what is queued, never waiting. The inbox here is a scripted stand-in
for the ZeroMQ socket: `None` entries are polls on which nothing had arrived yet.
"""

from __future__ import annotations

from threading import Event
from typing import Any

from streamer.config import load_pipeline_config
from streamer.packets import END, FRAME, FramePacket
from streamer.stages.base import Control
from streamer.stages.infer import InferStage


class ScriptedInbox:
    """Answers recv() from a script; an exhausted script keeps answering None (nothing arrives)."""

    def __init__(self, script: list[tuple[str, dict[str, Any]] | None]) -> None:
        self.script = list(script)
        self.timeouts: list[int | None] = []

    def recv(self, timeout_ms: int | None) -> tuple[str, dict[str, Any]] | None:
        self.timeouts.append(timeout_ms)
        return self.script.pop(0) if self.script else None


def frame(seq: int) -> tuple[str, dict[str, Any]]:
    return FRAME, FramePacket(seq, seq % 9, 4, 4, 0.0, None, 1.0).to_dict()


def stage() -> InferStage:
    control = Control(stop=Event(), abort=Event())
    return InferStage(None, load_pipeline_config(), "inproc://in", "inproc://out", control, None)  # type: ignore[arg-type]


def seqs(batch: list[FramePacket]) -> list[int]:
    return [p.seq for p in batch]


def test_a_file_batch_waits_to_fill_across_gaps() -> None:
    inbox = ScriptedInbox([frame(0), None, frame(1), None, None, frame(2), frame(3), None, frame(4), frame(5)])
    s = stage()
    batch, end = s._collect(inbox, 3, fill=True)  # type: ignore[arg-type]
    assert seqs(batch) == [0, 1, 2] and end is None
    batch, end = s._collect(inbox, 3, fill=True)  # type: ignore[arg-type]
    assert seqs(batch) == [3, 4, 5] and end is None
    assert 0 not in inbox.timeouts                          # a file never polls without waiting


def test_a_live_batch_takes_only_what_is_queued() -> None:
    inbox = ScriptedInbox([None, frame(0), frame(1), None, frame(2)])
    batch, end = stage()._collect(inbox, 3, fill=False)  # type: ignore[arg-type]
    assert seqs(batch) == [0, 1] and end is None
    batch, _ = stage()._collect(inbox, 3, fill=False)  # type: ignore[arg-type]
    assert seqs(batch) == [2]


def test_the_end_of_the_input_closes_a_partial_batch() -> None:
    inbox = ScriptedInbox([frame(0), None, frame(1), (END, {"reason": "end of input"})])
    batch, end = stage()._collect(inbox, 8, fill=True)  # type: ignore[arg-type]
    assert seqs(batch) == [0, 1] and end == {"reason": "end of input"}


def test_batches_do_not_depend_on_when_frames_arrive() -> None:
    """The same 11 frames, arriving with different gaps, give the same batches of 4, 4 and 3."""
    def batches(gaps: list[int]) -> list[list[int]]:
        script: list[tuple[str, dict[str, Any]] | None] = []
        for seq, gap in enumerate(gaps):
            script += [None] * gap + [frame(seq)]
        script.append((END, {}))
        inbox, s, out = ScriptedInbox(script), stage(), []
        while True:
            batch, end = s._collect(inbox, 4, fill=True)  # type: ignore[arg-type]
            if batch:
                out.append(seqs(batch))
            if end is not None:
                return out

    expected = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert batches([0] * 11) == expected
    assert batches([0, 2, 0, 1, 3, 0, 0, 1, 0, 2, 0]) == expected
    assert batches([1] * 11) == expected


def test_an_abort_ends_a_partial_batch_without_frames() -> None:
    s = stage()
    inbox = ScriptedInbox([frame(0)])
    s.control.abort.set()
    batch, end = s._collect(inbox, 4, fill=True)  # type: ignore[arg-type]
    assert batch == [] and end is None
