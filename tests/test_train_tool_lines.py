"""Every `python -m train.X` tool says a bad argument as README promises: one line,
`python -m train.X: error: ... (see `python -m train.X --help`)`, exit 2; not argparse's usage
block, whose error line comes last, after up to a dozen lines of options."""

from __future__ import annotations

import importlib

import pytest

TOOLS = ["train.evaluate", "train.lifting", "train.motion", "train.real_cutouts", "train.report", "train.ship",
         "train.soup", "train.step_bench", "train.temporal", "train.train", "train.video_eval", "train.synth.body",
         "train.synth.clip", "train.synth.cut_clips", "train.synth.generate"]


@pytest.mark.parametrize("tool", TOOLS)
def test_a_bad_argument_is_one_line_naming_the_tool(tool: str, capsys: pytest.CaptureFixture[str]) -> None:
    main = importlib.import_module(tool).main
    with pytest.raises(SystemExit) as done:
        main(["--no-such-option"])
    err = capsys.readouterr().err
    assert done.value.code == 2, err
    assert err.count("\n") == 1 and err.startswith(f"python -m {tool}: error: "), err   # (or its required options)


def test_soup_says_a_failure_as_the_other_tools_do(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from train.soup import main

    assert main(["--models", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--out", str(tmp_path / "s.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m train.soup: error: "), err
