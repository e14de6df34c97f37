"""Hand-made poses shared by tests: 2D poses of cut-off people (test_train_data.py,
test_cut_clips.py) and the network's results for the align stage (test_align_stage.py,
test_refiner.py)."""

from __future__ import annotations

import numpy as np

from engines.skeleton import H36M17
from streamer.packets import FramePacket, ResultPacket

# A person standing in an image, y down: (x, y) in units of the torso (shoulders to hips), feet at 0;
# the left wrist higher than the right, so that a mirror shows.
STANDING = {
    "head_top": (0.0, -3.75), "neck_nose": (0.0, -3.4), "thorax": (0.0, -3.0), "spine": (0.0, -2.5),
    "pelvis": (0.0, -2.0), "l_shoulder": (0.4, -3.0), "r_shoulder": (-0.4, -3.0), "l_elbow": (0.55, -2.4),
    "r_elbow": (-0.55, -2.4), "l_wrist": (0.6, -2.2), "r_wrist": (-0.6, -1.9), "l_hip": (0.25, -2.0),
    "r_hip": (-0.25, -2.0), "l_knee": (0.25, -1.0), "r_knee": (-0.25, -1.0), "l_ankle": (0.25, 0.0),
    "r_ankle": (-0.25, 0.0),
}
LEGS = ("l_knee", "r_knee", "l_ankle", "r_ankle")


def standing(centre_x: float, feet_y: float, torso_px: float) -> np.ndarray:
    """The STANDING pose with its feet centred on (centre_x, feet_y), the torso `torso_px` long."""
    pose = np.zeros((H36M17.num_joints, 2))
    for name, (x, y) in STANDING.items():
        pose[H36M17.index(name)] = (centre_x + x * torso_px, feet_y + y * torso_px)
    return pose


def result_packets(stage, n: int, nobody: range, fps: float, ring: int) -> list[ResultPacket]:
    """`n` frames of an align stage's input: a pose near a fixed one, its per-root offsets with
    noise, 2D joints and full confidence; nobody found in the frames of `nobody`."""
    rng = np.random.default_rng(5)
    joints, roots = stage.num_joints, stage.num_roots
    packets = []
    for seq in range(n):
        pose = rng.normal(0.0, 0.015, (joints, 3)) + np.linspace(0.0, 1.0, joints)[:, None]
        offsets = pose[None] - pose[list(stage.aligner.roots)][:, None] + rng.normal(0.0, 0.01, (roots, joints, 3))
        uv = rng.uniform(200.0, 300.0, (joints, 2))
        packets.append(ResultPacket(FramePacket(seq, seq % ring, 480, 640, seq / fps, seq / fps, 1.0),
                                    seq not in nobody, 0.9, uv.astype(np.float32), np.ones(joints, np.float32),
                                    offsets.astype(np.float32)))
    return packets
