"""The real photos' people cut out of their studio backgrounds, to be seen in front of other scenes.

`real2d_fashion`'s 1,000 photos are studio shots: one person before a plain wall or backdrop.
They are the only real appearance the 2D branch learns from, and they pair that appearance with
plain backgrounds, while the people it must find stand in streets and rooms. A person's mask
(GrabCut, Rother et al. 2004, started from the labelled skeleton: the limbs surely the person,
the body around them probably, everything beyond the keypoints' box surely not) lets training
put the same person, with the same labels, in front of a background photo
(`RealBackdrops`, used by `train.datasets.RealDataset` with `data.paste_fraction`).

    python -m train.real_cutouts --out ../data/real_cutouts      # about 0.6 s a photo on one core

writes one PNG mask per photo (255 the person, 0 the background, at the photo's size) and a
`manifest.json`; a run that was stopped carries on where it stopped.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engines.errors import InputError
from engines.skeleton import H36M17
from train.real2d import RealRecord, load_real2d

PROG = "python -m train.real_cutouts"
CUTOUT_VERSION = 2           # 2: a hand raised above the shoulders is no longer taken for the face
MANIFEST = "manifest.json"
WORK_SIDE = 360           # GrabCut runs on the photo shrunk to this longer side: 0.6 s, not 10


def _limbs() -> list[tuple[int, int]]:
    """Bones between labelled joints, and the shoulders' and hips' crossbars."""
    names = H36M17.joint_names
    pairs = [(j, p) for j, p in enumerate(H36M17.parents) if p >= 0]
    pairs += [(names.index("l_shoulder"), names.index("r_shoulder")),
              (names.index("l_hip"), names.index("r_hip"))]
    return pairs


def _torso(record: RealRecord) -> np.ndarray | None:
    idx = [H36M17.index(n) for n in ("l_shoulder", "r_shoulder", "r_hip", "l_hip")]
    return record.joints_2d[idx] if record.mask[idx].all() else None


def _head(record: RealRecord) -> tuple[np.ndarray, np.ndarray] | None:
    """(neck, face centre): the face keypoints are the box points above both shoulders that are
    not limb joints (a hand raised above the shoulders would pull the centre off the face)."""
    shoulders = [H36M17.index(n) for n in ("l_shoulder", "r_shoulder")]
    if not record.mask[shoulders].all():
        return None
    top = record.joints_2d[shoulders, 1].min()
    limbs = record.joints_2d[record.mask]
    points = record.box_points
    is_limb = (np.abs(points[:, None, :] - limbs[None, :, :]).sum(axis=2) < 1e-3).any(axis=1)
    face = points[(points[:, 1] < top) & ~is_limb]
    if len(face) == 0:
        return None
    return record.joints_2d[shoulders].mean(axis=0), face.mean(axis=0)


def person_mask(image: np.ndarray, record: RealRecord, iterations: int = 5) -> np.ndarray:
    """uint8 (H, W) mask of the labelled person of `image` (BGR): 255 the person, 0 not."""
    h, w = image.shape[:2]
    s = WORK_SIDE / max(h, w)
    small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    joints = record.joints_2d.astype(np.float64) * s
    labelled = record.mask
    points = np.concatenate([joints[labelled], record.box_points.astype(np.float64) * s])
    lo, hi = points.min(axis=0), points.max(axis=0)
    extent = float((hi - lo).max())
    margin = 0.12 * extent
    # The head top and hair rise above the face keypoints: more room above than around.
    x0, y0 = np.floor(np.maximum(lo - [margin, 1.5 * margin], 0)).astype(int)
    x1, y1 = np.ceil(np.minimum(hi + margin, [sw - 1, sh - 1])).astype(int)
    mask = np.full((sh, sw), cv2.GC_BGD, np.uint8)
    mask[y0:y1 + 1, x0:x1 + 1] = cv2.GC_PR_BGD
    thin = max(2, int(0.025 * extent))

    def draw(target: np.ndarray, width: int) -> None:
        for a, b in _limbs():
            if labelled[a] and labelled[b]:
                cv2.line(target, tuple(np.round(joints[a]).astype(int)), tuple(np.round(joints[b]).astype(int)),
                         1, width)
        head = _head(record)
        if head is not None:
            neck, face = (np.round(p * s).astype(int) for p in head)
            cv2.line(target, tuple(neck), tuple(face), 1, width)

    body = np.zeros((sh, sw), np.uint8)
    draw(body, 4 * thin)
    torso = _torso(record)
    if torso is not None:
        cv2.fillPoly(body, [np.round(torso * s).astype(np.int32)], 1)
    mask[body > 0] = cv2.GC_PR_FGD
    sure = np.zeros((sh, sw), np.uint8)
    draw(sure, thin)
    if not sure.any():
        # Labels that join into no limb (two lone joints): nothing to start from, and GrabCut
        # would fail on an empty foreground. No person: the photo is never put before a backdrop.
        return np.zeros((h, w), np.uint8)
    mask[sure > 0] = cv2.GC_FGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    # GrabCut's k-means starts from OpenCV's generator: seeded, a photo's mask is the same in any
    # process and order (unseeded, half of them moved by a pixel or so at the edge between runs).
    cv2.setRNGSeed(0)
    cv2.grabCut(small, mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    person = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
    # Patches of backdrop that GrabCut took for the person, apart from the body, are dropped.
    _, parts = cv2.connectedComponents(person)
    keep = np.unique(parts[sure > 0])
    person = np.isin(parts, keep[keep > 0]).astype(np.uint8) * 255
    full = cv2.resize(person, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.where(full >= 128, 255, 0).astype(np.uint8)


def cutout_path(folder: Path, record: RealRecord) -> Path:
    return Path(folder) / (record.path.stem + ".png")


def make_cutouts(records: Sequence[RealRecord], out: Path, progress: bool = True) -> int:
    """Writes the missing masks of `records` into `out`; returns how many it wrote."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    written = 0
    seen: set[str] = set()
    for rec in tqdm(records, disable=not progress, unit="photo", file=sys.stderr, dynamic_ncols=True,
                    desc="cutouts"):
        path = cutout_path(out, rec)
        if path.name in seen or path.exists():
            continue
        seen.add(path.name)
        image = cv2.imread(str(rec.path), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot read the real photo {rec.path}: restore it, or take its entry out "
                             f"of keypoints.json")
        tmp = path.with_suffix(f".{os.getpid()}.tmp.png")     # two runs at once never share one
        if not cv2.imwrite(str(tmp), person_mask(image, rec)):
            raise OSError(f"cannot write {tmp} (disk full, or no permission?)")
        os.replace(tmp, path)            # a stopped run leaves no half-written mask under the real name
        written += 1
    return written


def _manifest(folder: Path) -> dict | None:
    """The folder's manifest, None where it has none; a ValueError where it cannot be read."""
    manifest = Path(folder) / MANIFEST
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {manifest} ({exc}): delete {folder} and make the cut-outs again with "
                         f"python -m train.real_cutouts --out {folder}") from None
    return data


def _write_manifest(out: Path, complete: bool, photos: int | None = None) -> None:
    data = {"version": CUTOUT_VERSION, "complete": complete, "work_side": WORK_SIDE}
    if photos is not None:
        data["photos"] = photos
    tmp = out / f"{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST)


def start_cutouts(out: Path) -> None:
    """Marks `out` as being filled by this version (before the first mask), so that masks of
    another version, finished or not, are never resumed as this one's."""
    out.mkdir(parents=True, exist_ok=True)
    data = _manifest(out)
    if data is None and any(out.glob("*.png")):
        raise ValueError(f"{out} holds masks but no {MANIFEST} (written by an older version?): delete them, or "
                         f"give another --out")
    if data is not None and data.get("version") != CUTOUT_VERSION:
        raise ValueError(f"{out} holds cut-outs of version {data.get('version')}, and this code makes version "
                         f"{CUTOUT_VERSION}: delete them, or give another --out")
    if data is None or data.get("complete") is False:
        _write_manifest(out, complete=False)


@dataclass(frozen=True)
class Cutouts:
    """The masks of a cut-out folder, by photo file name."""
    folder: Path
    masks: dict[str, Path]

    @classmethod
    def load(cls, folder: Path | str, records: Sequence[RealRecord]) -> Cutouts:
        folder = Path(folder)
        data = _manifest(folder)
        if data is None:
            raise FileNotFoundError(f"{folder} holds no cut-outs ({MANIFEST} missing): make them with "
                                    f"python -m train.real_cutouts --out {folder}")
        version = data.get("version")
        if version != CUTOUT_VERSION:
            # Made again into the same folder, the old masks would be kept as they are: a new folder.
            raise ValueError(f"{folder} holds cut-outs of version {version}, this code reads {CUTOUT_VERSION}: "
                             f"delete them and make them again with python -m train.real_cutouts --out {folder}")
        if data.get("complete") is False:
            raise ValueError(f"the cut-outs in {folder} are unfinished (a run was stopped): run python -m "
                             f"train.real_cutouts --out {folder} again to finish them")
        paths = {r.path.name: cutout_path(folder, r) for r in records}
        masks = {name: path for name, path in paths.items() if path.is_file()}
        for path in dict.fromkeys(masks.values()):
            # Every mask decoded once now (1.3 s for the 1,000 photos): a damaged one is found before
            # training or an evaluation starts, not as a traceback from a loader worker half-way through.
            _decode_mask(path, np.fromfile(path, dtype=np.uint8), folder)
        return cls(folder, masks)


def _decode_mask(path: Path, data: np.ndarray, folder: Path) -> np.ndarray:
    """The mask PNG `data` read from `path`; an `InputError` (one line, how to make it again) where
    it cannot be decoded: cut short, overwritten, or not a PNG."""
    mask = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if mask is None:
        # make_cutouts makes only the masks that are missing: deleting this one is enough.
        raise InputError(f"the cut-out {path} is damaged: delete it and make it again with python -m "
                         f"train.real_cutouts --out {folder}")
    return mask


def read_photo(path: Path, cache: dict, key: object) -> np.ndarray:
    """Real photo `path`, decoded from its bytes (read once, kept in `cache` under `key`: a JPEG is a
    tenth of its pixels). A missing, unreadable or undecodable file is one line (InputError), not a
    traceback from a loader worker half-way through training."""
    data = cache.get(key)
    if data is None:
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            raise InputError(f"cannot read the real photo {path} ({exc.strerror or exc}); restore it, or take "
                             f"its entry out of keypoints.json") from None
        cache[key] = data
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError(f"cannot read the real photo {path}: it is not an image OpenCV can decode (damaged?); "
                         f"restore it, or take its entry out of keypoints.json")
    return image


class RealBackdrops:
    """Puts a real photo's person, cut out by its mask, in front of a background photo.

    `apply` takes the crop that `RealDataset` warped from the photo (and its warp), warps the
    mask the same way, and fills everything outside the person from a crop of a random training
    background photo (`train.negatives.negative_crop`: its scale, clutter and jitter). The mask's
    edge is softened over about a pixel of the crop, as a camera's would be."""

    def __init__(self, cutouts: Cutouts, photos: Sequence[Path], fraction: float, bystanders: float = 0.0,
                 sources: Mapping[str, Path] | None = None) -> None:
        from train.backgrounds import load_backgrounds
        # Here, not at the module's top: train.negatives imports train.datasets, which imports this.
        from train.negatives import NegativeOptions, negative_crop

        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"paste_fraction: must be in [0, 1] (got {fraction})")
        if fraction > 0 and not photos:
            raise ValueError("paste_fraction > 0 needs background photos for training")
        self.cutouts = cutouts
        loaded = load_backgrounds(list(photos))
        self.names = [name for name, _ in loaded]
        self.photos = [img for _, img in loaded]
        # The background each photo was last put before: an evaluation's samples share these,
        # and its intervals resample them with the photos (train/eval_against.py).
        self.shown: dict[str, str] = {}
        self.fraction = float(fraction)
        self._backdrop = negative_crop
        self._backdrop_options = NegativeOptions(side=(0.3, 1.0))     # the person stays the subject
        self._png: dict[str, np.ndarray] = {}
        if not 0.0 <= bystanders <= 1.0:
            raise ValueError(f"bystander_fraction: must be in [0, 1] (got {bystanders})")
        # Bystanders: other photos' people (`sources`: their files by name), never the held-out ones.
        self.bystanders = float(bystanders)
        self.sources = dict(sources or {})
        self._bystander_names = sorted(n for n in cutouts.masks if n in self.sources)
        if self.bystanders > 0 and len(self._bystander_names) < 2:
            raise ValueError("bystanders need the masks of at least two photos to stand by")
        self._jpeg: dict[str, np.ndarray] = {}

    def mask_of(self, name: str) -> np.ndarray | None:
        path = self.cutouts.masks.get(name)
        if path is None:
            return None
        data = self._png.get(name)
        if data is None:
            data = self._png[name] = np.fromfile(path, dtype=np.uint8)
        return _decode_mask(path, data, self.cutouts.folder)     # damaged since `Cutouts.load`: still one line

    def apply(self, crop: np.ndarray, warp: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
        """The crop (uint8 BGR, warped from photo `name` by the 2x3 matrix `warp`) in front of a
        new background with probability `fraction`; else the crop itself. Draws nothing from
        `rng` at fraction 0 or for a photo without a mask, so recipes without it see the stream
        they always saw."""
        if self.fraction <= 0.0 or name not in self.cutouts.masks or rng.random() >= self.fraction:
            return crop
        mask = self.mask_of(name)
        if mask is None or not mask.any():      # an empty mask: labels GrabCut could not start from
            return crop
        size = crop.shape[0]
        alpha = cv2.warpAffine(mask, warp, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=0)
        alpha = cv2.GaussianBlur(alpha, (0, 0), 0.7).astype(np.float32)[..., None] * (1.0 / 255.0)
        k = int(rng.integers(len(self.photos)))
        photo = self.photos[k]
        self.shown[name] = self.names[k]
        backdrop = self._backdrop(photo, size, rng, self._backdrop_options).astype(np.float32)
        layers = [(crop.astype(np.float32), alpha)]          # drawn over the backdrop in this order
        bystander = self._bystander(name, mask, warp, alpha, rng) if (
            self.bystanders > 0 and rng.random() < self.bystanders) else None
        if bystander is not None:
            other, other_alpha, in_front = bystander
            layers.insert(len(layers) if in_front else 0, (other, other_alpha))
        out = backdrop
        for image, image_alpha in layers:
            out = image * image_alpha + out * (1.0 - image_alpha)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)

    def _bystander(self, name: str, mask: np.ndarray, warp: np.ndarray, alpha: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool] | None:
        """Another training photo's person, cut out and warped beside (behind, or now and then in
        front of) the crop's person, whose mask is `mask` in the photo and `alpha` in the crop
        (`warp`: photo to crop): about their height, their feet near theirs, overlapping them or a
        little apart, as people side by side in a street. Unlabelled: the crop's labels stay its own
        person's, so the network learns to draw one skeleton on the person the crop is centred on,
        not one over both (docs/results.md, "Stage 32: real bystanders"). None where the crop shows
        too little of its person to place one by."""
        size = alpha.shape[0]
        if np.count_nonzero(alpha[..., 0] > 0.5) < 20:
            return None
        # The person's whole extent in the crop's pixels, from the photo's mask, not from what the
        # crop shows of them: a crop cut between hips and knees (cut_fraction) shows half a person,
        # and a bystander sized and stood on that half was a whole person half their height, feet
        # at the cut. Placed by the whole, the bystander is cut where the person is.
        pys, pxs = np.nonzero(mask)
        xs = warp[0, 0] * pxs + warp[0, 1] * pys + warp[0, 2]
        ys = warp[1, 0] * pxs + warp[1, 1] * pys + warp[1, 2]
        height = float(ys.max() - ys.min() + 1)
        centre_x = 0.5 * float(xs.min() + xs.max())
        others = self._bystander_names
        other = others[int(rng.integers(len(others)))]
        if other == name:
            other = others[(others.index(other) + 1) % len(others)]
        other_mask = self.mask_of(other)
        if other_mask is None or not other_mask.any():
            return None
        oys, oxs = np.nonzero(other_mask)
        scale = height * float(rng.uniform(0.75, 1.15)) / float(oys.max() - oys.min() + 1)
        mirror = -1.0 if rng.random() < 0.5 else 1.0
        shift = float(rng.choice([-1.0, 1.0])) * float(rng.uniform(0.15, 0.6)) * height
        feet = float(ys.max()) + float(rng.uniform(-0.15, 0.1)) * height
        in_front = bool(rng.random() < 0.3)
        source_x = 0.5 * float(oxs.min() + oxs.max())
        placed = np.array([[mirror * scale, 0.0, centre_x + shift - mirror * scale * source_x],
                           [0.0, scale, feet - scale * float(oys.max())]])
        photo = self._photo(other)
        image = cv2.warpAffine(photo, placed, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        other_alpha = cv2.warpAffine(other_mask, placed, (size, size), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT)
        other_alpha = cv2.GaussianBlur(other_alpha, (0, 0), 0.7).astype(np.float32)[..., None] * (1.0 / 255.0)
        return image.astype(np.float32), other_alpha, in_front

    def _photo(self, name: str) -> np.ndarray:
        return read_photo(self.sources[name], self._jpeg, name)


def main(argv: list[str] | None = None) -> int:
    from engines.arguments import OneLineParser
    from engines.stop_signals import describe, exit_code, stop_signals_interrupt

    ap = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--real2d", default=None, help="the COCO folder (keypoints.json, images/); default "
                    "$POSECAST_DATA/real2d_fashion")
    ap.add_argument("--out", required=True, help="folder for the masks (outside the repository)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        # SIGTERM and SIGHUP stop it as Ctrl-C does: one line, the masks written so far kept.
        with stop_signals_interrupt():
            records = load_real2d(args.real2d)
            out = Path(args.out)
            start_cutouts(out)
            written = make_cutouts(records, out, progress=not args.no_progress)
            _write_manifest(out, complete=True, photos=len({r.path.name for r in records}))
    except (OSError, ValueError) as exc:
        said = (f"'{exc.filename}': {exc.strerror} (check the path and its permissions)"
                if isinstance(exc, OSError) and exc.filename and exc.strerror else str(exc))
        print(f"{PROG}: error: {said}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"{PROG}: {describe(exc)}; the masks written are kept: run the same command again to carry on",
              file=sys.stderr)
        return exit_code(exc)
    print(f"{written} masks written to {out} ({len(records)} records)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
