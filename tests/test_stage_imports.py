"""What a stage process imports before it starts, and how often a batch pays for it
(`posecast track a.mp4 b.mp4 ...` starts four stage processes per input)."""

from __future__ import annotations

import multiprocessing
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What every stage process imports: stage_main and the stage's own module (not the `posecast`
# command's module: the pipeline starts the stages with the main module hidden).
STAGE_IMPORTS = ("streamer.process", "streamer.stages.capture", "streamer.stages.infer",
                 "streamer.stages.align", "streamer.stages.output")


def _imported(modules: tuple[str, ...], wanted: tuple[str, ...]) -> list[str]:
    """Which of `wanted` a fresh interpreter holds after importing `modules`."""
    code = (f"import sys\nfor m in {list(modules)!r}:\n    __import__(m)\n"
            f"print(','.join(m for m in {list(wanted)!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_a_stage_process_does_not_import_what_only_the_command_needs() -> None:
    """YAML is read by the command (its config), and no stage reads it; it cost every stage
    process some 10 ms to import. (`importlib.metadata`, imported lazily for the same reason, is
    not checked: the libraries a stage uses may import it themselves in a later release.)"""
    assert _imported(STAGE_IMPORTS, ("yaml",)) == []


def test_the_stage_processes_do_not_import_the_command(posecast, clip40: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spawned, each stage process imported its parent's main module first, the `posecast`
    command's (argparse, the batch planner, the config loader): some 0.1 s of CPU for each of the
    four at every input of a batch. Python's import log, which every process of the run writes to
    the one stderr, shows argparse imported once: by the command."""
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    r = posecast.run(["track", clip40, "-o", posecast.cwd / "t.jsonl", "--no-progress"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "person found" in r.stderr.splitlines()[-1]
    assert len(re.findall(r"\|\s+argparse$", r.stderr, flags=re.MULTILINE)) == 1


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(), reason="stages are spawned here")
def test_a_batch_imports_the_stages_once(posecast, clip40: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spawned, the four stage processes of each input were new interpreters that imported their
    modules again: 0.7 s of CPU for each input. They are forked from one server that imported
    them (streamer/stage_server.py): three inputs, and the stage modules are imported by two
    processes, the command (for the pipeline) and the server, not by 1 + 4 x 3."""
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    names = [posecast.cwd / f"c{i}.mp4" for i in range(3)]
    for name in names:
        name.symlink_to(clip40)
    r = posecast.run(["track", *names, "-o", posecast.cwd / "{name}.jsonl", "--no-progress"])
    assert r.returncode == 0, r.stderr[-2000:]
    for module in STAGE_IMPORTS:
        assert len(re.findall(rf"\|\s+{re.escape(module)}$", r.stderr, flags=re.MULTILINE)) == 2, module


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(), reason="stages are spawned here")
def test_the_stages_do_not_import_from_the_current_folder(posecast, clip40: Path, tmp_path: Path) -> None:
    """The stage server is `python -c ...`, which put the current folder first on its sys.path: run
    in a folder with a `tqdm.py` of the user's (or another checkout's `streamer/`), the server
    imported it into every stage, and this one killed it: "the capture stage could not be started".
    The command is started as its console script is, from a file in another folder, so that
    its own sys.path holds no current folder either."""
    work = posecast.cwd / "work"
    work.mkdir()
    (work / "tqdm.py").write_text('raise RuntimeError("a tqdm.py of the user\'s, not the tqdm Posecast uses")\n')
    script = tmp_path / "bin" / "posecast_command.py"
    script.parent.mkdir()
    script.write_text("import sys\nfrom streamer.entry import main\nsys.exit(main())\n")
    posecast.cwd = work
    r = posecast.run(["track", clip40, "-o", work / "t.jsonl", "--no-progress"], command=[sys.executable, script])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "tqdm.py of the user's" not in r.stderr
