"""The `posecast` command's entry point (streamer/entry.py): a Ctrl-C while it imports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from streamer import entry

ROOT = Path(__file__).resolve().parents[1]

# Makes `import streamer.cli` say so on stderr and then take a minute: a Ctrl-C is sent then.
SLOW_IMPORT = """
import sys, time

class SlowCli:
    def find_spec(self, name, path=None, target=None):
        if name == "streamer.cli":
            print("importing the command line", file=sys.stderr, flush=True)
            time.sleep(60)
        return None

sys.meta_path.insert(0, SlowCli())
"""


def interrupted_while_importing(slow_import: str, command: list[str], tmp_path: Path) -> tuple[int, str]:
    """Runs `command` with `slow_import` as its sitecustomize, sends SIGINT once the slow import
    has begun, and returns the exit code and what stderr held after the import's own line."""
    (tmp_path / "sitecustomize.py").write_text(slow_import)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    assert proc.stderr is not None
    assert proc.stderr.readline().startswith("importing ")
    proc.send_signal(signal.SIGINT)
    try:
        rest = proc.stderr.read()
        return proc.wait(timeout=30), rest
    finally:
        proc.kill()


def test_the_command_is_the_light_entry_point() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["posecast"] == "streamer.entry:main"


def test_ctrl_c_while_the_command_line_imports_is_one_line(tmp_path: Path) -> None:
    """Sent while Python still imported the command line, before any handler of ours was in place,
    a Ctrl-C printed the import's traceback (50 lines): it is now the one line any Ctrl-C is."""
    command = [sys.executable, "-c", "import sys; from streamer.entry import main; sys.exit(main())", "track", "x.mp4"]
    assert interrupted_while_importing(SLOW_IMPORT, command, tmp_path) == (130, "posecast: interrupted\n")


def test_a_ctrl_c_before_the_command_begins_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import streamer.cli

    def interrupted() -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(streamer.cli, "main", interrupted)
    assert entry.main() == 130
    assert capsys.readouterr().err == "posecast: interrupted\n"


SLOW_TORCH = SLOW_IMPORT.replace('"streamer.cli"', '"torch"').replace("importing the command line", "importing torch")


def test_ctrl_c_while_a_training_tool_imports_torch_is_one_line(tmp_path: Path) -> None:
    """`python -m train.train` imports torch, seconds, before it takes the stop signals over: a
    Ctrl-C then printed the import's traceback. It is one line, and the tool still ends by SIGINT."""
    command = [sys.executable, "-m", "train.train", "--help"]
    assert interrupted_while_importing(SLOW_TORCH, command, tmp_path) == \
        (-signal.SIGINT, "python -m train.train: interrupted\n")


def test_an_import_interrupt_names_the_module_run() -> None:
    from engines.import_interrupt import module_run

    assert module_run(["python", "-X", "importtime", "-m", "train.synth.generate", "--count", "2"]) == \
        "python -m train.synth.generate"
    assert module_run(["python", "-c", "pass"]) == "python -m train"
