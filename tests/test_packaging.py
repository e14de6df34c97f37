"""What a non-editable install (`pip install .`) carries: pyproject.toml lists its packages by
hand, so a new sub-package left off the list would import here (the tests run from the source
tree) and be missing from a wheel."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]
TOP_PACKAGES = ("engines", "streamer", "train")


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {init.parent.relative_to(ROOT).as_posix().replace("/", ".")
             for top in TOP_PACKAGES for init in (ROOT / top).rglob("__init__.py")}
    # Folders of data only (no __init__.py) are listed too: setuptools otherwise warns, at every
    # install, that Python could import them but the wheel would leave them out.
    data_folders = {"engines.weights"}
    assert all(not (ROOT / d.replace(".", "/") / "__init__.py").exists() for d in data_folders)
    assert found | data_folders == listed


def test_the_processes_the_tests_start_run_this_checkouts_code(tmp_path: Path) -> None:
    import subprocess
    import sys

    found = subprocess.run([sys.executable, "-c", "import streamer; print(streamer.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(found).resolve().is_relative_to(ROOT.resolve()), found
