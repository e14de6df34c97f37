"""engines/environment.py: a variable set for a while, the user's own kept."""

from __future__ import annotations

import os

import pytest

from engines.environment import environ_default

NAME = "POSECAST_TEST_ENVIRON_DEFAULT"


def test_a_default_is_set_inside_and_gone_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NAME, raising=False)
    with environ_default(NAME, "1"):
        assert os.environ[NAME] == "1"
    assert NAME not in os.environ


def test_the_users_own_value_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, "4")
    with environ_default(NAME, "1"):
        assert os.environ[NAME] == "4"
    assert os.environ[NAME] == "4"


def test_the_default_goes_when_the_block_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NAME, raising=False)
    with pytest.raises(RuntimeError), environ_default(NAME, "1"):
        raise RuntimeError("inside")
    assert NAME not in os.environ
