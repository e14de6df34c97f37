"""Image folders, glob patterns and single images: each image a frame, in natural order."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from engines.errors import InputError
from streamer.sources.base import DETAILED_WARNINGS, Frame, Source, SourceInfo, error_reason, sendable_text, three_channels
from streamer.sources.stream import mistyped_url_hint, shown_spec

log = logging.getLogger(__name__)

_EXIF_TURNED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP")   # Pillow's names
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pbm", ".ppm",
                    ".pgm", ".pnm", ".jp2", ".j2k", ".ras", ".sr")
# Pictures a folder may hold that are not read as shots: named in a warning, not silently left out.
# (A GIF is often an animation: given alone, it is read as a video.) TGA and EXR are what renderers
# such as Blender write frames as; HDR and PFM are float pictures Pillow cannot read the header of.
UNREAD_IMAGE_EXTENSIONS = (".gif", ".heic", ".heif", ".avif", ".jxl", ".svg", ".ico", ".dng", ".cr2", ".nef", ".arw",
                           ".tga", ".exr", ".hdr", ".pfm", ".pcx", ".psd", ".dds", ".jxr", ".raf", ".orf", ".rw2")
# Videos: a folder or pattern is read as images, and one holding these gets a hint to give them singly.
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts", ".flv",
                    ".wmv", ".3gp")
GLOB_CHARS = re.compile(r"[*?\[]")
# The most pixels an image may have. A JPEG is decoded reduced (1/2 to 1/8 of each side) when it
# is larger than frames are kept, so its memory stays small up to OpenCV's own limit
# (CV_IO_MAX_IMAGE_PIXELS). Other formats are decoded whole (3 bytes a pixel): for them Pillow's
# guard against decompression bombs, 2 x its MAX_IMAGE_PIXELS, stays (600 MB decoded).
MAX_JPEG_PIXELS = 1 << 30
MAX_WHOLE_DECODE_PIXELS = 178_956_970
_REDUCIBLE_FORMATS = ("JPEG", "MPO")     # Pillow's names of what OpenCV decodes reduced


@contextlib.contextmanager
def _any_size() -> Iterator[None]:
    """Pillow refuses to open an image over its decompression-bomb limit (179 million pixels: a
    200-megapixel phone photo), though only the header is read here. The limit is lifted for the
    opening alone; what may be decoded is decided from the header (`_pixel_limit`)."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def natural_key(s: str) -> tuple:
    """'img2' before 'img10'. re.split alternates text and digit runs, so types line up."""
    parts = re.split(r"(\d+)", s)
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)), s


@dataclass(frozen=True)
class _ImageEntry:
    path: Path
    name: str                   # what messages call it: its path from the folder or pattern's start
    width: int                  # as OpenCV will decode it (EXIF orientation applied)
    height: int
    pixel_limit: int            # the most pixels an image of its format may have here
    floats: bool = False        # samples of 32-bit floats, which OpenCV's colour decoding refuses


def _images_among(paths: list[Path], where: str, reopened: bool = False) -> list[Path]:
    """The paths named as images this reads. A broken link among them is kept, to be reported as
    unreadable; macOS's '._' companion files are no images; pictures in formats not read here are
    named in one warning."""
    images = [c for c in paths if c.suffix.lower() in IMAGE_EXTENSIONS and not c.name.startswith("._")
              and (c.is_file() or (c.is_symlink() and not c.exists()))]
    unread = sorted({c.suffix.lower() for c in paths if c.suffix.lower() in UNREAD_IMAGE_EXTENSIONS})
    if unread:
        n = sum(1 for c in paths if c.suffix.lower() in UNREAD_IMAGE_EXTENSIONS)
        if not images:
            raise InputError(f"no images in {where} are in a format read here: its {n} picture(s) are "
                             f"{', '.join(unread)}; convert them to JPEG or PNG")
        if not reopened:
            log.warning("left out %d picture(s) in %s in formats not read here (%s); convert them to JPEG or PNG "
                        "to track them", n, where, ", ".join(unread))
    videos = [] if images else sorted(c for c in paths if c.suffix.lower() in VIDEO_EXTENSIONS)
    if videos:
        raise InputError(f"{where}: no images, but {len(videos)} video(s); a folder or pattern is read as "
                         f"images: give the videos themselves as inputs, which are tracked in turn "
                         f"(posecast track {_videos_pattern(videos)} -o 'tracks/{{name}}.jsonl')")
    return images


def _videos_pattern(videos: list[Path]) -> str:
    """The videos as the shell would list them, unquoted: 'clips/*.mp4' ('clips/*.MOV clips/*.mp4'
    for two kinds)."""
    folder = "" if str(videos[0].parent) == "." else shlex.quote(str(videos[0].parent)) + "/"
    return " ".join(f"{folder}*{suffix}" for suffix in sorted({v.suffix for v in videos}))


def _no_match(spec: str, base: Path) -> str:
    """The error for a pattern that matched no image, with what to check. (Quoting the pattern is
    no fix here: a shell passes a pattern that matches nothing on as it is.)"""
    if not os.path.isdir(base):        # False, not an error, where a folder above may not be entered
        hint = mistyped_url_hint(spec) or " (check the path)"
        return f"no images match '{shown_spec(spec)}': there is no folder '{shown_spec(str(base))}'{hint}"
    # A folder is read whole, whatever the case of its images' extensions, but not its subfolders.
    whole = base == Path(os.path.expanduser(spec)).parent
    folder = f"; or give the folder '{base}' to read every image in it" if whole else ""
    ext = Path(spec).suffix
    other = ext.upper() if ext != ext.upper() else ext.lower()
    case = f": '*{ext}' leaves out {other} files" if ext and ext != other and not GLOB_CHARS.search(ext) else ""
    return f"no images match '{spec}' (check the folder and the pattern, whose case counts{case}{folder})"


def _in_subfolders_hint(folder: Path, spec: str) -> str:
    """Where a folder holds no images but its subfolders do (a data set of one folder a person or
    a shot), how to read them: a folder is read without its subfolders."""
    try:
        subfolders = [c for c in folder.iterdir() if c.is_dir()]
        n = sum(1 for sub in subfolders for c in sub.iterdir() if c.suffix.lower() in IMAGE_EXTENSIONS)
    except OSError:
        return ""                        # a subfolder that cannot be read: no hint, the error stands
    if not n:
        return ""
    pattern = shlex.quote(os.path.join(spec, "**", "*"))
    return (f"; its {len(subfolders)} subfolder(s) hold {n} image(s), which a folder does not include: "
            f"give the pattern {pattern} to read them")


def _once_each(paths: list[Path], spec: str, reopened: bool) -> list[Path]:
    """`paths` less those naming a file taken already: '**' follows links to folders, and a
    link to a folder above it ('self -> .') would give every image again at each depth."""
    shortest: dict[str, Path] = {}
    for p in paths:
        # Of a file's names, the one through the fewest folders ('sub/b.png', not 'self/sub/b.png').
        real = os.path.realpath(p)
        if real not in shortest or len(p.parts) < len(shortest[real].parts):
            shortest[real] = p
    chosen = set(shortest.values())
    kept = [p for p in paths if p in chosen]
    if len(kept) < len(paths) and not reopened:
        log.warning("'%s' matches %d image(s) again through links; each is tracked once", spec,
                    len(paths) - len(kept))
    return kept


def _shown_name(path: Path, base: Path) -> str:
    """An image's name in messages: its path from `base`, so that a recursive pattern's images in
    different folders keep different names ('a/x.jpg', 'b/x.jpg'); a plain folder's, its file name."""
    try:
        return sendable_text(path.relative_to(base).as_posix())
    except ValueError:
        return sendable_text(path.name)


def _not_opened(path: Path) -> str | None:
    """Why the file system will not open an image whose header could not be read (no permission
    to read it), or None where it opens: then its content is what is wrong. Pillow's errors do
    not tell the two apart, and "damaged" would send the user after a file that is fine."""
    try:
        with open(path, "rb"):
            return None
    except OSError as exc:
        return error_reason(exc)


def _unread_header(path: Path) -> str:
    """Why an image that opens has no header that reads: an empty file says what to look for
    (a copy or download that did not finish), not only that it is damaged."""
    with contextlib.suppress(OSError):
        if path.stat().st_size == 0:
            return "the file is empty (0 bytes): the copy or download that made it did not finish"
    return "cannot read the image header"


class ImageFolderSource(Source):
    """The images in a folder, matching a glob pattern, or a single image file, in natural order.

    Images larger than `max_image_side` are scaled down to fit (`Frame.scale` says by how much).
    Frames keep their own size: `info.width/height` is the largest a frame can be.
    """

    def __init__(self, spec: str, max_image_side: int = 1920, reopened: bool = False) -> None:
        self.corrupt = 0
        self._held_warnings = []
        self._max_side = max_image_side
        paths, name, base = self._find(str(spec), reopened)
        self._entries: list[_ImageEntry] = []
        failures: list[str] = []
        too_large: str | None = None
        for p in paths:
            entry = self._header(p, _shown_name(p, base))
            if entry is None:
                failures.append(p.name)
                denied = _not_opened(p)
                self._skipped(p, f"cannot open it: {denied}" if denied else _unread_header(p))
            elif entry.width * entry.height > entry.pixel_limit:
                failures.append(p.name)
                kind = "a JPEG" if entry.pixel_limit == MAX_JPEG_PIXELS else "an image that is not a JPEG"
                too_large = (f"it has {entry.width * entry.height / 1e6:.3g} million pixels, more than the "
                             f"{entry.pixel_limit / 1e6:.3g} million {kind} may have here (scale it down first)")
                self._skipped(p, too_large)
            else:
                self._entries.append(entry)
        if not self._entries:               # its one line: the warnings held say no more
            if len(paths) == 1 and too_large is not None:
                raise InputError(f"cannot read image '{paths[0]}': {too_large}")
            if len(paths) == 1 and paths[0].is_file() and paths[0].stat().st_size == 0:
                raise InputError(f"image '{paths[0]}' is empty (0 bytes): the copy or download that made it did not "
                                 f"finish")
            denied = _not_opened(paths[0])
            if len(paths) == 1 and denied:
                raise InputError(f"cannot open image '{paths[0]}': {denied} (check the file's permissions)")
            if len(paths) == 1:
                raise InputError(f"'{paths[0]}' is not an image file that can be read (damaged, or samples this "
                                 f"reader cannot take, such as 32-bit floats: convert it to an 8-bit JPEG or PNG)")
            if denied:
                raise InputError(f"none of the {len(paths)} images in '{spec}' can be read (first: {failures[0]}, "
                                 f"which cannot be opened: {denied}; check the files' permissions)")
            raise InputError(f"none of the {len(paths)} images in '{spec}' can be read "
                             f"(first: {failures[0]}; damaged, or convert them to 8-bit JPEG or PNG)")
        # Readers size their buffers from info before any frame exists, so info needs the largest
        # frame up front. Pillow's open() reads only the header (pixels load lazily), which keeps
        # this fast for folders of thousands of large images.
        sizes = [self._fitted(e.width, e.height) for e in self._entries]
        self.info = SourceInfo(
            name=name, uri=str(spec), live=False,
            width=max(s[0] for s in sizes), height=max(s[1] for s in sizes),
            fps=None, frame_count=len(paths), stills=True,
        )

    def _find(self, spec: str, reopened: bool) -> tuple[list[Path], str, Path]:
        """The images, the input's short name, and the folder their names are given from."""
        p = Path(os.path.expanduser(spec))
        if p.is_file():
            return [p], p.stem, p.parent
        if p.is_dir():
            try:
                found = _images_among(list(p.iterdir()), f"folder '{spec}'", reopened)
            except OSError as exc:
                raise InputError(f"cannot read folder '{spec}': {error_reason(exc)}") from None
            if not found:
                raise InputError(f"no images in folder '{spec}' (looked for "
                                 f"{', '.join(IMAGE_EXTENSIONS)}){_in_subfolders_hint(p, spec)}")
            return sorted(found, key=lambda c: natural_key(c.name)), p.resolve().name or "images", p
        matches = [Path(m) for m in glob.glob(os.path.expanduser(spec), recursive=True)]
        found = _images_among(matches, f"'{spec}'", reopened)
        # The folder the pattern starts in ('runs/a/*.png' -> 'runs/a'), which names the input.
        base = Path(os.path.expanduser(spec))
        while base != base.parent and GLOB_CHARS.search(str(base)):
            base = base.parent
        if not found:
            raise InputError(_no_match(spec, base))
        found = _once_each(sorted(found, key=lambda m: natural_key(str(m))), spec, reopened)
        return found, base.resolve().name or "images", base

    @staticmethod
    def _header(p: Path, name: str) -> _ImageEntry | None:
        try:
            with _any_size(), Image.open(p) as im:
                w, h = im.size
                # OpenCV turns JPEG, PNG and WebP images by the EXIF orientation in their
                # header; match it. Pillow has read that EXIF on opening (a PNG's eXIf chunk after
                # the pixels, which would take reading the whole file, OpenCV ignores too), and
                # reports TIFFs already turned.
                if (im.format in _EXIF_TURNED_FORMATS and "exif" in im.info
                        and im.getexif().get(0x0112, 1) in (5, 6, 7, 8)):
                    w, h = h, w
                limit = MAX_JPEG_PIXELS if im.format in _REDUCIBLE_FORMATS else MAX_WHOLE_DECODE_PIXELS
                floats = im.mode == "F"
        except Exception:   # Pillow raises many types for malformed files; all mean "unreadable"
            return None
        return _ImageEntry(p, name, w, h, limit, floats) if w > 0 and h > 0 else None

    def _fitted(self, w: int, h: int) -> tuple[int, int]:
        long_side = max(w, h)
        if long_side <= self._max_side:
            return w, h
        s = self._max_side / long_side
        return max(1, round(w * s)), max(1, round(h * s))

    def _skipped(self, p: Path, why: str) -> None:
        self.corrupt += 1
        if self.corrupt <= DETAILED_WARNINGS:
            self._warn("skipped image '%s': %s", p, why)

    def _read(self, e: _ImageEntry) -> tuple[np.ndarray, float, tuple[int, int]] | None:
        # Very large JPEGs decode much faster at 1/2, 1/4 or 1/8 size; stay at or above target.
        flags = cv2.IMREAD_COLOR
        for factor, reduced in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                                (2, cv2.IMREAD_REDUCED_COLOR_2)):
            # (OpenCV reduces other formats by resizing after the decode, which fails on a side
            # it would make zero: a 4000x1 strip.)
            if max(e.width, e.height) // factor >= self._max_side and min(e.width, e.height) // factor >= 1:
                flags = reduced
                break
        try:
            data = np.fromfile(e.path, dtype=np.uint8)   # imdecode: non-ASCII paths work too
        except OSError:
            return None
        try:
            if e.floats and data.size:
                # OpenCV's colour decoding refuses 32-bit float samples (a TIFF, as scientific and HDR
                # tools write), with a warning of its own: read as stored, they are brought to 8 bits.
                image = as_bgr8(cv2.imdecode(data, cv2.IMREAD_UNCHANGED))
            else:
                image = cv2.imdecode(data, flags) if data.size else None
        except cv2.error:
            return None                  # a decoder that gives up with an exception: unreadable, as None is
        if image is None or image.ndim != 3 or image.shape[2] != 3:
            return None
        h, w = image.shape[:2]
        if flags == cv2.IMREAD_COLOR:
            ow, oh = w, h                  # decoded at full size: the decoder is the authority
        elif (w > h) == (e.width > e.height):
            ow, oh = e.width, e.height
        else:
            ow, oh = e.height, e.width     # rotated by an orientation tag the header check missed
        tw, th = self._fitted(ow, oh)
        # Never exceed info's size, which readers allocated from: only a header that lied can
        # get here, and shrinking a little more beats overrunning a buffer.
        s = min(1.0, self.info.width / tw, self.info.height / th)
        if s < 1.0:
            tw, th = max(1, int(tw * s)), max(1, int(th * s))
        if (w, h) != (tw, th):
            image = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
        scale = max(ow, oh) / max(tw, th)
        return np.ascontiguousarray(image), scale, (ow, oh)

    def frames(self) -> Iterator[Frame]:
        index = 0
        size: tuple[int, int] | None = None
        for e in self._entries:
            got = self._read(e)
            if got is None:
                self._skipped(e.path, "cannot decode the image")
                continue
            image, scale, full_size = got
            self._release_warnings()
            # An image of another size is no frame of the same video (tracking.folder_images: sequence).
            yield Frame(image=image, index=index, t_capture=time.time(), t_media=None,
                        scale=scale, name=e.name, full_size=full_size if scale != 1.0 else None,
                        new_shot=size is not None and full_size != size)
            size = full_size
            index += 1
        if self.corrupt > DETAILED_WARNINGS:
            self._warn("%d images skipped in all; the first %d are named above", self.corrupt, DETAILED_WARNINGS)
        if index == 0:
            n = self.info.frame_count
            raise InputError(f"none of the {n} image(s) in '{self.info.uri}' could be decoded (the files are "
                             f"damaged or not images)" if n != 1 else
                             f"'{self._entries[0].path}' could not be decoded (the file is damaged or not an image)")
        self._release_warnings()

    def close(self) -> None:
        pass                                 # nothing held open between frames


def as_bgr8(image: np.ndarray | None) -> np.ndarray | None:
    """An image decoded as stored, as 8-bit BGR: floats of 0-1 scaled to 0-255 (a few highlights
    may pass 1; values up to 255 are taken as 0-255 already) and clipped, 16-bit integers cut to
    their high byte, grey and alpha dropped to three channels; None where it is none of those."""
    if image is None or image.ndim not in (2, 3) or image.size == 0:
        return None
    if image.dtype.kind == "f":
        finite = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        # A linear or HDR picture's highlights go a little past 1, but not far: a 0-255 picture's
        # brightest values do, however dark the rest of it.
        top = float(finite.max())
        scale = 255.0 if top <= 1.0 or (top <= 16.0 and float(np.percentile(finite, 99.0)) <= 1.0) else 1.0
        image = np.clip(finite * scale + 0.5, 0, 255).astype(np.uint8)
    elif image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        return None
    return three_channels(image)
