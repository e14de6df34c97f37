"""A stage process's name in ps and top (streamer/proctitle.py): `posecast[infer]`, cut to the
kernel's 15 bytes for its comm, and a run that goes on with the default name where it cannot be set."""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import types
from pathlib import Path

import pytest

from streamer.pipeline import STAGES
from streamer.proctitle import comm_name, name_process, set_cmdline, set_comm, stage_title


def test_each_stage_has_its_own_name_of_at_most_15_bytes() -> None:
    assert [stage_title(s) for s in STAGES] == ["posecast[capture]", "posecast[infer]", "posecast[align]",
                                                 "posecast[output]"]
    comms = [comm_name(stage_title(s)) for s in STAGES]
    assert comms == [b"posecast[captur", b"posecast[infer]", b"posecast[align]", b"posecast[output"]
    assert all(len(c) <= 15 for c in comms) and len(set(comms)) == len(comms)


def test_the_comm_is_not_cut_inside_a_character() -> None:
    # "é" is two bytes, the 15th and 16th: the kernel would keep half of it.
    assert comm_name("posecast[abcdeé]") == b"posecast[abcde"
    assert comm_name("short") == b"short"


def _in_a_thread(call) -> tuple[object, str]:
    """Runs `call` in a new thread and returns what it gave and that thread's comm afterwards.
    prctl(PR_SET_NAME) names the calling thread: the test process's own name is left alone."""
    out: dict[str, object] = {}

    def run() -> None:
        out["result"] = call()
        out["comm"] = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().rstrip("\n")

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out["result"], str(out["comm"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the comm is Linux's")
def test_set_comm_names_the_calling_thread() -> None:
    assert _in_a_thread(lambda: set_comm("posecast[capture]")) == (True, "posecast[captur")
    assert _in_a_thread(lambda: name_process("posecast[infer]", (set_comm,))) == (True, "posecast[infer]")


def test_no_comm_where_the_system_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert set_comm("posecast[infer]") is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the comm is Linux's")
def test_no_comm_without_a_libc_or_its_prctl(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_libc(*args, **kwargs):
        raise OSError("no libc here")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert set_comm("posecast[infer]") is False
    monkeypatch.setattr(ctypes, "CDLL", lambda *args, **kwargs: types.SimpleNamespace())    # no prctl
    assert set_comm("posecast[infer]") is False


def test_a_setter_that_fails_does_not_fail_the_run() -> None:
    def broken(title: str) -> bool:
        raise RuntimeError("anything at all")

    assert name_process("posecast[infer]", (broken,)) is False
    assert name_process("posecast[infer]", (broken, lambda title: True)) is True
    assert name_process("posecast[infer]", (lambda title: False, lambda title: False)) is False


def test_no_command_line_title_without_setproctitle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "setproctitle", None)       # import raises ImportError
    assert set_cmdline("posecast[infer]") is False


def test_setproctitle_is_kept_off_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unasked, setproctitle writes over the memory /proc/PID/environ is read from (the tests find
    a run's processes by a variable there); SPT_NOENV, set for its call only, keeps it off."""
    seen: list[tuple[str, str | None]] = []
    fake = types.ModuleType("setproctitle")
    fake.setproctitle = lambda title: seen.append((title, os.environ.get("SPT_NOENV")))   # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "setproctitle", fake)
    monkeypatch.delenv("SPT_NOENV", raising=False)

    assert set_cmdline("posecast[align]") is True
    assert seen == [("posecast[align]", "1")]
    assert "SPT_NOENV" not in os.environ

    monkeypatch.setenv("SPT_NOENV", "")          # the user's own setting stands
    assert set_cmdline("posecast[align]") is True
    assert seen[-1] == ("posecast[align]", "") and os.environ["SPT_NOENV"] == ""
