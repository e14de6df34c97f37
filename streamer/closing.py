"""Closing several resources at once: each gets its turn whatever the others do."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from engines.errors import OutputLostError


def close_all(closers: list[Callable[[], Any]]) -> None:
    """Calls every closer, even after one fails: a full disk that stops a track file must not
    leave the overlay unfinished or the publisher open. The first failure is raised at the end,
    unless the stage is already failing for another reason, which then stays the one reported."""
    failures: list[Exception] = []
    for close in closers:
        try:
            close()
        except Exception as exc:  # noqa: BLE001 - every resource gets its turn; see the docstring
            failures.append(exc)
    failures = _lost_as_one(failures)
    for later in failures[1:]:
        print(f"posecast: warning: while closing: {later}", file=sys.stderr)
    if failures:
        if sys.exc_info()[1] is not None:
            print(f"posecast: warning: while closing: {failures[0]}", file=sys.stderr)
        else:
            raise failures[0]


def _lost_as_one(failures: list[Exception]) -> list[Exception]:
    """Outputs lost together (their folder removed mid-run) as one error, where the first was:
    one line names them all."""
    lost = [f for f in failures if isinstance(f, OutputLostError)]
    if len(lost) < 2:
        return failures
    at = failures.index(lost[0])
    others = [f for f in failures if not isinstance(f, OutputLostError)]
    return [*others[:at], OutputLostError([p for f in lost for p in f.paths]), *others[at:]]
