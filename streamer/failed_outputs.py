"""Outputs that failed during a run while the others went on (a track file on a full disk, an
overlay video that could not be written): what each holds, and the one line that says them all."""

from __future__ import annotations

from dataclasses import dataclass

from engines.errors import PosecastError


@dataclass
class FailedOutput:
    """`error`: its own one line (what, why, how to fix). `frames`: the whole frames the output
    kept (a .jsonl or .csv is cut back to its last whole frame); None where it keeps nothing of its
    own to count (an overlay video, removed; a file that failed as it was finished)."""

    error: PosecastError
    frames: int | None = None

    def said(self, of: int | None = None) -> str:
        """Its error, and what it holds out of `of` frames (None: the run has not ended)."""
        text = str(self.error)
        if self.frames is None:
            return text
        if self.frames == 0:
            return f"{text}; it holds " + ("no frame" if of is None else f"none of the {of} frames")
        if self.frames == 1:
            return f"{text}; it holds only the first frame" + (f" of {of}" if of is not None else "")
        return f"{text}; it holds the first {self.frames}" + (f" of {of}" if of is not None else "") + " frames"


class OutputsFailedError(PosecastError):
    """Every output that failed, in one line: the first, its count, the others after it, and
    which outputs got every frame. Its exit code is the first failure's (2 for a full disk).
    `also`: where the run already has an error line (another stage failed), this one belongs
    beside it, rather than being dropped as a consequence of it."""

    also = True

    def __init__(self, failed: list[FailedOutput], frames: int | None = None,
                 whole: list[str] | None = None) -> None:
        self.failed = list(failed)
        self.exit_code = failed[0].error.exit_code
        first, rest = failed[0], failed[1:]
        text = first.said(frames)
        if rest:
            n = len(rest)
            text += (f"; and {n} other output{'' if n == 1 else 's'} failed too: "
                     + "; ".join(f.said(frames) for f in rest))
        if whole:
            got = f"all {frames} frames" if frames is not None and frames > 1 else "every frame"
            named = f"{', '.join(whole[:-1])} and {whole[-1]}" if len(whole) > 1 else whole[0]
            text += f"{'; ' if rest else ', and '}{named} got {got}"
        super().__init__(text)
