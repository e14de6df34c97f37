"""Closing several resources at once: each gets its turn whatever the others do."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def close_all(closers: list[Callable[[], Any]]) -> None:
    """Calls every closer, even after one fails: a full disk that stops a track file must not
    leave the overlay unfinished or the publisher open. The first failure is raised at the end,
    unless the stage is already failing for another reason, which then stays the one reported."""
    first: BaseException | None = None
    for close in closers:
        try:
            close()
        except Exception as exc:  # noqa: BLE001 - every resource gets its turn; see the docstring
            if first is None:
                first = exc
            else:
                print(f"posecast: warning: while closing: {exc}", file=sys.stderr)
    if first is not None:
        if sys.exc_info()[1] is not None:
            print(f"posecast: warning: while closing: {first}", file=sys.stderr)
        else:
            raise first
