"""A variable of this process's environment set for a while, where the user has not set it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def environ_default(name: str, value: str) -> Iterator[None]:
    """`name` is `value` inside, unless the environment held it already (the user's own choice,
    kept); what the environment held before is back after."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)
