"""The skeleton: the single source of truth for joints, bones, left/right pairs and roots.

Human3.6M's 17-joint subset, in its usual order. Every other module (network, decoding,
alignment, drawing, the wire protocol, training) takes joint order and topology from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Skeleton:
    """A kinematic tree. `parents[i]` is the index of joint i's parent, -1 for the origin joint."""

    name: str
    joint_names: tuple[str, ...]
    parents: tuple[int, ...]
    torso: tuple[str, ...]           # the joints the tracker centres its region on
    origin: str
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.joint_names) != len(self.parents):
            raise ValueError("joint_names and parents differ in length")
        if len(set(self.joint_names)) != len(self.joint_names):
            raise ValueError("joint names are not unique")
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(self.joint_names)})
        for i, p in enumerate(self.parents):
            if p >= i or (p < 0 and self.joint_names[i] != self.origin):
                raise ValueError(f"joint {self.joint_names[i]}: parents must precede children")
        for r in self.torso:
            self.index(r)

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def index(self, joint: str) -> int:
        try:
            return self._index[joint]
        except KeyError:
            raise ValueError(
                f"unknown joint '{joint}' (the {self.name} joints are: {', '.join(self.joint_names)})"
            ) from None

    def indices(self, joints: tuple[str, ...] | list[str]) -> tuple[int, ...]:
        return tuple(self.index(j) for j in joints)

    @property
    def bones(self) -> tuple[tuple[int, int], ...]:
        """(parent, child) index pairs, in joint order."""
        return tuple((p, c) for c, p in enumerate(self.parents) if p >= 0)

    @property
    def left_right_pairs(self) -> tuple[tuple[int, int], ...]:
        """(left, right) index pairs, found by the l_/r_ naming convention."""
        pairs = []
        for i, n in enumerate(self.joint_names):
            if n.startswith("l_"):
                pairs.append((i, self.index("r_" + n[2:])))
        return tuple(pairs)

    @property
    def flip_permutation(self) -> tuple[int, ...]:
        """Joint order after a horizontal mirror: left and right swap."""
        perm = list(range(self.num_joints))
        for left, right in self.left_right_pairs:
            perm[left], perm[right] = right, left
        return tuple(perm)

    def is_left(self, joint: int) -> bool:
        return self.joint_names[joint].startswith("l_")

    def is_right(self, joint: int) -> bool:
        return self.joint_names[joint].startswith("r_")


H36M17 = Skeleton(
    name="h36m17",
    joint_names=(
        "pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "spine", "thorax",
        "neck_nose", "head_top", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
    ),
    parents=(-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15),
    # Torso joints: the steadiest part of the body, which the tracker centres its region on. (A
    # network's roots, the joints its 3D branch measures the others from, are its config's:
    # configs/model.yaml, the same six.) The pose is reported relative to `origin`.
    torso=("pelvis", "thorax", "r_hip", "l_hip", "r_shoulder", "l_shoulder"),
    origin="pelvis",
)
