"""The body bank: anny bodies of random shape, reduced to what rendering needs, in one small file.

anny (MakeHuman data, CC0; code Apache-2.0) is a PyTorch body model with a 104-bone rig. Rendering
does not need the rig: it needs, per body, the rest-pose mesh and where the 17 Human3.6M joints sit
on it, and, shared by all bodies, the triangles, the skinning weights merged onto the rigid parts
that the 17-joint skeleton can drive, and a region label per vertex (for clothing). Exporting these
once (`python -m train.synth.body`) keeps anny (and its minute-long first start) out of the
rendering loop, and gives a file small enough to carry to a GPU machine.

Human3.6M's joints are not anatomical landmarks but the joints of a skeleton fitted to markers; the
definitions below are linear combinations of anny's bone heads and mesh vertices, chosen to match
Human3.6M's mean proportions (its training subjects' mean bone lengths, see `docs/training.md`):

- hips: anny's `upperleg01` heads, moved outwards from the midline by `HIP_WIDEN` (Human3.6M's
  hip joints sit wider than anny's femoral heads); pelvis: the midpoint of the hips, as in
  Human3.6M, where the two agree to a micrometre;
- ankles, elbows, wrists: the heads of `foot`, `lowerarm01` and `wrist`; knees: the centre of the
  ring of vertices the thigh and shin share, moved by where the `lowerleg01` head sits from that
  ring on the mean body (anny's knee head drifts up the thigh as its height axis falls: 63 mm
  above the ring at 0.1, 12 mm at 0.6; the other limb heads keep their place within 5 mm);
- shoulders: midway between the `shoulder01` and `upperarm01` heads (Human3.6M's shoulder width);
- thorax: midway between the `neck01` head and the clavicle heads' midpoint (5 cm above the
  shoulders, as in Human3.6M); spine: the `spine02` head (48% of the way up the torso);
- neck_nose: the `head` bone's head, where the skull turns on the neck, as Human3.6M's neck_nose
  is the head bone's start in its 32-joint skeleton (until 2026-12-06 it was midway to anny's COCO
  nose, read by mistake from the posed mesh, which anny stands up to 0.37 m higher or lower than
  the rest mesh: the joint wandered from the forehead to the base of the neck with the height axis);
- head_top: midway between the eyes' centre and the crown (the mean of the 30 highest head
  vertices of the template).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import InputError
from engines.files import replaced_when_done, write_hint
from engines.skeleton import H36M17

HIP_WIDEN = 1.3
# Raised when a joint's definition changes, so that a bank with the old labels is refused, not
# rendered from. 2: neck_nose at the head bone, the knees on the mesh (2026-12-06).
JOINTS_VERSION = 2

# Rigid parts the 17-joint skeleton drives. Each anny bone's skinning weight goes to one part.
PARTS: tuple[str, ...] = (
    "pelvis", "abdomen", "chest", "neck", "head",
    "l_thigh", "l_shin", "r_thigh", "r_shin",
    "l_upper_arm", "l_forearm", "r_upper_arm", "r_forearm",
)

# Clothing regions (a vertex's region decides what covers it).
REGIONS: tuple[str, ...] = (
    "face", "scalp", "neck", "chest", "abdomen", "pelvis", "upper_arm", "forearm", "hand",
    "thigh", "shin", "foot",
)


# anny bone name prefixes -> (rigid part, clothing region). Parts of limbs get the side prefix.
_BONE_CLASSES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("root", "pelvis", "spine05"), "pelvis", "pelvis"),
    (("spine04", "spine03"), "abdomen", "abdomen"),
    (("spine02", "spine01", "clavicle", "shoulder01"), "chest", "chest"),
    (("neck",), "neck", "neck"),
    (("head", "eye"), "head", "face"),
    (("upperleg",), "thigh", "thigh"),
    (("lowerleg",), "shin", "shin"),
    (("foot", "toe"), "shin", "foot"),
    (("upperarm",), "upper_arm", "upper_arm"),
    (("lowerarm",), "forearm", "forearm"),
    (("wrist", "finger", "metacarpal"), "forearm", "hand"),
)
_SIDED = ("thigh", "shin", "upper_arm", "forearm")


def classify_bone(name: str) -> tuple[str, str]:
    """(part, region) of an anny bone: which rigid part drives it, and what clothing covers it."""
    base = name.split(".")[0]
    side = "l_" if name.endswith(".L") else "r_"
    for prefixes, part, region in _BONE_CLASSES:
        if base.startswith(prefixes):
            return (side + part if part in _SIDED else part), region
    raise ValueError(f"anny bone '{name}' has no part")


@dataclass(frozen=True)
class BodyBank:
    """Bodies in anny's rest frame: metres, z up, the person facing -y, their left at +x."""

    faces: np.ndarray           # (F, 3) int32
    part_weights: np.ndarray    # (V, P) float32, rows sum to 1
    region: np.ndarray          # (V,) uint8 index into REGIONS
    template: np.ndarray        # (V, 3) float32: the mean body, for texture coordinates
    vertices: np.ndarray        # (B, V, 3) float32 rest meshes
    joints: np.ndarray          # (B, 17, 3) float32 rest H36M17 joints
    phenotypes: np.ndarray      # (B, 6) float32 anny phenotype values
    phenotype_labels: tuple[str, ...]

    @property
    def num_bodies(self) -> int:
        return int(self.vertices.shape[0])

    def save(self, path: Path) -> None:
        with replaced_when_done(Path(path)) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(
                f, faces=self.faces, part_weights=self.part_weights.astype(np.float16), region=self.region,
                template=self.template, vertices=self.vertices.astype(np.float16), joints=self.joints,
                phenotypes=self.phenotypes, phenotype_labels=np.array(self.phenotype_labels),
                parts=np.array(PARTS), regions=np.array(REGIONS), joints_version=np.array(JOINTS_VERSION),
            )

    @classmethod
    def load(cls, path: Path) -> "BodyBank":
        if not Path(path).is_file():
            raise FileNotFoundError(f"body bank {path} not found (make it with: python -m train.synth.body --out {path})")
        try:
            with np.load(path, allow_pickle=False) as d:
                arrays = {k: d[k] for k in d.files}
            parts, regions = tuple(arrays["parts"]), tuple(arrays["regions"])
            version = int(arrays.get("joints_version", 1))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            # numpy's own message about pickles is advice we do not want to pass on.
            raise ValueError(f"{path} is not a body bank (not a readable .npz: {type(exc).__name__}); "
                             f"make one with: python -m train.synth.body --out {path}") from None
        again = f"make it again with: python -m train.synth.body --out {path}"
        if parts != PARTS or regions != REGIONS:
            raise ValueError(f"{path} was made by another version of train.synth.body; {again}")
        if version != JOINTS_VERSION:
            raise ValueError(f"{path} holds version {version} of the joint labels, and this train.synth.body "
                             f"makes version {JOINTS_VERSION} (its knees and neck_nose moved); {again}")
        return cls._from_arrays(arrays)

    @classmethod
    def _from_arrays(cls, d: Any) -> "BodyBank":
        w = d["part_weights"].astype(np.float32)
        return cls(
            faces=d["faces"].astype(np.int32), part_weights=w / w.sum(axis=1, keepdims=True),
            region=d["region"].astype(np.uint8), template=d["template"].astype(np.float32),
            vertices=d["vertices"].astype(np.float32), joints=d["joints"].astype(np.float32),
            phenotypes=d["phenotypes"].astype(np.float32),
            phenotype_labels=tuple(str(s) for s in d["phenotype_labels"]),
        )


def sample_phenotypes(rng: np.random.Generator, count: int, labels: list[str]) -> list[dict[str, float]]:
    """Adults of both sexes, across build and height. anny's age axis: 2/3 is a young adult, 1 old."""
    out = []
    for _ in range(count):
        p = {k: float(rng.uniform(0.0, 1.0)) for k in labels}
        if "age" in p:
            p["age"] = float(rng.uniform(0.58, 1.0))
        if "weight" in p:
            p["weight"] = float(np.clip(rng.normal(0.5, 0.22), 0.0, 1.0))
        if "muscle" in p:
            p["muscle"] = float(np.clip(rng.normal(0.5, 0.2), 0.0, 1.0))
        if "height" in p:
            # anny's height axis reaches 2.1 m at 0.8; 0.1..0.6 spans about 1.55..1.90 m.
            p["height"] = float(rng.uniform(0.1, 0.6))
        if "proportions" in p:
            p["proportions"] = float(rng.uniform(0.0, 0.6))
        out.append(p)
    return out


@dataclass(frozen=True)
class MeshAnchors:
    """The joints read off the mesh rather than anny's rig, as template vertex indices."""

    crown: np.ndarray                              # the 30 highest head vertices
    knee_rings: dict[str, np.ndarray]              # "l_"/"r_": vertices the thigh and shin share
    knee_offsets: dict[str, np.ndarray]            # "l_"/"r_": rig knee minus ring centre, mean body


def mesh_anchors(part_weights: np.ndarray, template: np.ndarray, template_heads: dict[str, np.ndarray],
                 head_ids: np.ndarray) -> MeshAnchors:
    """The crown (the 30 highest of the template's `head_ids`), each knee's ring (vertices with a
    quarter or more of their weight on both thigh and shin) and the mean body's rig knee relative
    to its centre."""
    rings, offsets = {}, {}
    for side, s in (("l_", ".L"), ("r_", ".R")):
        thigh, shin = PARTS.index(side + "thigh"), PARTS.index(side + "shin")
        ring = np.flatnonzero((part_weights[:, thigh] > 0.25) & (part_weights[:, shin] > 0.25))
        if ring.size < 8:
            raise ValueError(f"anny's {side}knee shares only {ring.size} vertices between thigh and shin")
        rings[side] = ring
        offsets[side] = template_heads["lowerleg01" + s] - template[ring].mean(axis=0)
    return MeshAnchors(crown=head_ids[np.argsort(template[head_ids, 2])[-30:]], knee_rings=rings, knee_offsets=offsets)


def h36m_joints(heads: np.ndarray, names: list[str], verts: np.ndarray, anchors: MeshAnchors) -> np.ndarray:
    """The 17 Human3.6M joints (module docstring) from one body's rest bone heads and vertices."""
    h = {n: heads[i] for i, n in enumerate(names)}
    j = np.zeros((H36M17.num_joints, 3), dtype=np.float64)
    idx = H36M17.index
    mid_x = 0.5 * (h["upperleg01.L"][0] + h["upperleg01.R"][0])
    for side, s in (("l_", ".L"), ("r_", ".R")):
        hip = h["upperleg01" + s].copy()
        hip[0] = mid_x + HIP_WIDEN * (hip[0] - mid_x)
        j[idx(side + "hip")] = hip
        j[idx(side + "knee")] = verts[anchors.knee_rings[side]].mean(axis=0) + anchors.knee_offsets[side]
        j[idx(side + "ankle")] = h["foot" + s]
        j[idx(side + "shoulder")] = 0.5 * (h["shoulder01" + s] + h["upperarm01" + s])
        j[idx(side + "elbow")] = h["lowerarm01" + s]
        j[idx(side + "wrist")] = h["wrist" + s]
    j[idx("pelvis")] = 0.5 * (j[idx("l_hip")] + j[idx("r_hip")])
    clav = 0.5 * (h["clavicle.L"] + h["clavicle.R"])
    j[idx("thorax")] = 0.5 * (h["neck01"] + clav)
    j[idx("spine")] = h["spine02"]
    j[idx("neck_nose")] = h["head"]
    eyes = 0.5 * (h["eye.L"] + h["eye.R"])
    j[idx("head_top")] = 0.5 * (eyes + verts[anchors.crown].mean(axis=0))
    return j.astype(np.float32)


def build_bank(choose: Callable[[list[str]], list[dict[str, float]]], progress: bool = True) -> BodyBank:
    """Bodies for the phenotypes `choose` picks, given anny's phenotype labels."""
    import torch
    import anny
    from tqdm import tqdm

    model = anny.Anny().to(dtype=torch.float32)
    names = list(model.bone_labels)
    labels = list(model.phenotype_labels)
    ident = torch.eye(4)[None, None].repeat(1, model.bone_count, 1, 1)

    def rest(pheno: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            o = model(pose_parameters=ident, phenotype_kwargs=pheno)
        return o["rest_vertices"][0].numpy(), o["rest_bone_heads"][0].numpy()

    template, template_heads = rest({k: 0.5 for k in labels})
    # Merge the rig's sparse skinning weights onto the parts, and label regions by dominant bone.
    w = model.vertex_bone_weights.numpy().astype(np.float64)
    bi = model.vertex_bone_indices.numpy()
    bone_part = np.array([PARTS.index(classify_bone(n)[0]) for n in names])
    bone_region = np.array([REGIONS.index(classify_bone(n)[1]) for n in names])
    nv = template.shape[0]
    part_w = np.zeros((nv, len(PARTS)))
    np.add.at(part_w, (np.repeat(np.arange(nv), bi.shape[1]), bone_part[bi].ravel()), w.ravel())
    part_w /= part_w.sum(axis=1, keepdims=True)
    region = bone_region[bi[np.arange(nv), np.argmax(w, axis=1)]].astype(np.uint8)
    # The scalp: head vertices above the eyes or behind the ears.
    is_face = region == REGIONS.index("face")
    heads_t = dict(zip(names, template_heads))
    eye_z = 0.5 * (heads_t["eye.L"][2] + heads_t["eye.R"][2]) + 0.015
    back_y = heads_t["head"][1] + 0.02
    scalp = is_face & ((template[:, 2] > eye_z) | (template[:, 1] > back_y))
    region[scalp] = REGIONS.index("scalp")
    anchors = mesh_anchors(part_w, template, heads_t, np.flatnonzero(is_face))

    phenos = choose(labels)
    count = len(phenos)
    verts = np.zeros((count, nv, 3), np.float32)
    joints = np.zeros((count, H36M17.num_joints, 3), np.float32)
    for b, p in enumerate(tqdm(phenos, desc="anny bodies", unit="body", disable=not progress)):
        v, heads = rest(p)
        verts[b] = v
        joints[b] = h36m_joints(heads, names, v, anchors)
    return BodyBank(
        faces=model.faces.numpy().astype(np.int32), part_weights=part_w.astype(np.float32), region=region,
        template=template.astype(np.float32), vertices=verts, joints=joints,
        phenotypes=np.array([[p[k] for k in labels] for p in phenos], np.float32),
        phenotype_labels=tuple(labels),
    )


def export(count: int, seed: int, out: Path) -> BodyBank:
    rng = np.random.default_rng(seed)
    bank = build_bank(lambda labels: sample_phenotypes(rng, count, labels))
    out.parent.mkdir(parents=True, exist_ok=True)
    bank.save(out)
    return bank


PROG = "python -m train.synth.body"
MAX_BODIES = 10_000        # about 7 MB a hundred: more is a typo, and would take minutes in silence


def main(argv: list[str] | None = None) -> int:
    from engines.arguments import OneLineParser
    from engines.files import unwritable_reason

    ap = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="where to write the body bank (.npz)")
    ap.add_argument("--bodies", type=int, default=120, help="number of random body shapes")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    # Held-out bodies are a share of the bank (at least one), so two is the least that splits.
    if not 2 <= args.bodies <= MAX_BODIES:
        ap.error(f"--bodies must be between 2 (one to train on, one held out) and {MAX_BODIES} (got {args.bodies})")
    if args.seed < 0:
        ap.error(f"--seed must be >= 0 (got {args.seed})")
    if args.out.is_dir():
        ap.error(f"--out '{args.out}' is a folder; give the body bank's file name (bodies.npz)")
    # Before anny builds the bodies (minutes for a large bank), not in a traceback after.
    reason = unwritable_reason(args.out, make_folders=True)
    if reason is not None:
        raise InputError(f"cannot write --out '{args.out}': {reason}")
    try:
        bank = export(args.bodies, args.seed, args.out)
    except OSError as err:
        # Written through a new file renamed into place: nothing is left half-written.
        raise InputError(f"cannot write --out '{args.out}': {err.strerror or err} ({write_hint(err)})") from None
    size = args.out.stat().st_size / 1e6
    print(f"wrote {args.out}: {bank.num_bodies} bodies, {bank.vertices.shape[1]} vertices, {size:.1f} MB")
    return 0


if __name__ == "__main__":
    from engines.stop_signals import run_command

    raise SystemExit(run_command(PROG, main, "nothing was written"))
