"""The skeleton: joint order, tree, left/right pairs, roots, and validation of bad definitions."""

from __future__ import annotations

import pytest

from engines.skeleton import H36M17, Skeleton

H36M_ORDER = (
    "pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "spine", "thorax",
    "neck_nose", "head_top", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
)


def test_seventeen_joints_in_human36m_order() -> None:
    assert H36M17.num_joints == 17
    assert H36M17.joint_names == H36M_ORDER
    assert [H36M17.index(n) for n in H36M_ORDER] == list(range(17))
    assert H36M17.indices(("thorax", "pelvis")) == (8, 0)


def test_parents_form_a_tree_rooted_at_pelvis() -> None:
    parents = H36M17.parents
    assert len(parents) == 17
    roots = [i for i, p in enumerate(parents) if p < 0]
    assert roots == [H36M17.index("pelvis")]
    assert H36M17.origin == "pelvis"
    # Every joint reaches the pelvis by following parents, without cycles.
    for joint in range(17):
        seen = set()
        j = joint
        while parents[j] >= 0:
            assert j not in seen
            seen.add(j)
            assert 0 <= parents[j] < 17
            j = parents[j]
        assert j == 0
    # 16 bones, each (parent, child), one per non-root joint.
    assert len(H36M17.bones) == 16
    assert sorted(c for _, c in H36M17.bones) == list(range(1, 17))


def test_anatomy_of_the_tree() -> None:
    name = H36M17.joint_names
    parent_of = {name[c]: name[p] for p, c in H36M17.bones}
    assert parent_of["r_hip"] == parent_of["l_hip"] == parent_of["spine"] == "pelvis"
    assert parent_of["r_knee"] == "r_hip" and parent_of["r_ankle"] == "r_knee"
    assert parent_of["l_knee"] == "l_hip" and parent_of["l_ankle"] == "l_knee"
    assert parent_of["thorax"] == "spine" and parent_of["neck_nose"] == "thorax"
    assert parent_of["head_top"] == "neck_nose"
    assert parent_of["l_shoulder"] == parent_of["r_shoulder"] == "thorax"
    assert parent_of["l_elbow"] == "l_shoulder" and parent_of["l_wrist"] == "l_elbow"
    assert parent_of["r_elbow"] == "r_shoulder" and parent_of["r_wrist"] == "r_elbow"


def test_left_right_pairs_are_mirror_names() -> None:
    pairs = H36M17.left_right_pairs
    assert len(pairs) == 6
    names = H36M17.joint_names
    for left, right in pairs:
        assert names[left].startswith("l_") and names[right].startswith("r_")
        assert names[left][2:] == names[right][2:]
        assert H36M17.is_left(left) and H36M17.is_right(right)
        assert not H36M17.is_right(left) and not H36M17.is_left(right)
    # Every sided joint is in exactly one pair; the centre line is in none.
    paired = [j for pair in pairs for j in pair]
    assert len(set(paired)) == 12
    sided = {i for i, n in enumerate(names) if n[:2] in ("l_", "r_")}
    assert set(paired) == sided
    for centre in ("pelvis", "spine", "thorax", "neck_nose", "head_top"):
        j = H36M17.index(centre)
        assert not H36M17.is_left(j) and not H36M17.is_right(j)


def test_flip_permutation_is_an_involution_swapping_sides() -> None:
    perm = H36M17.flip_permutation
    assert sorted(perm) == list(range(17))
    assert tuple(perm[perm[i]] for i in range(17)) == tuple(range(17))
    names = H36M17.joint_names
    for i, j in enumerate(perm):
        if names[i].startswith("l_"):
            assert names[j] == "r_" + names[i][2:]
        elif names[i].startswith("r_"):
            assert names[j] == "l_" + names[i][2:]
        else:
            assert j == i
    # The mirror keeps the tree: a flipped bone is a bone.
    bones = set(H36M17.bones)
    assert {(perm[p], perm[c]) for p, c in bones} == bones


def test_the_torso_is_valid_and_includes_the_origin() -> None:
    roots = H36M17.torso
    assert roots
    assert H36M17.origin in roots
    assert len(set(roots)) == len(roots)
    idx = H36M17.indices(roots)
    assert all(0 <= i < 17 for i in idx)
    assert H36M17.index(H36M17.origin) in idx


def test_unknown_joint_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown joint 'nose'.*pelvis"):
        H36M17.index("nose")
    with pytest.raises(ValueError, match="unknown joint"):
        H36M17.indices(("pelvis", "tail"))


def _make(**changes) -> Skeleton:
    base = dict(name="tiny", joint_names=("root", "l_a", "r_a"), parents=(-1, 0, 0),
                torso=("root",), origin="root")
    base.update(changes)
    return Skeleton(**base)


def test_a_small_valid_skeleton() -> None:
    s = _make()
    assert s.num_joints == 3
    assert s.left_right_pairs == ((1, 2),)
    assert s.flip_permutation == (0, 2, 1)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(parents=(-1, 0)), "differ in length"),
        (dict(joint_names=("root", "l_a", "l_a")), "not unique"),
        (dict(parents=(-1, 2, 0)), "parents must precede children"),      # a child before its parent
        (dict(parents=(-1, 1, 0)), "parents must precede children"),      # a joint its own parent
        (dict(parents=(-1, -1, 0)), "parents must precede children"),     # a second root
        (dict(parents=(0, -1, 0)), "parents must precede children"),      # origin not the root
        (dict(origin="l_a"), "parents must precede children"),            # origin is not the tree's root
        (dict(torso=("root", "hip")), "unknown joint 'hip'"),
    ],
)
def test_bad_skeleton_definitions_raise(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _make(**changes)


def test_unpaired_side_joint_raises() -> None:
    s = _make(joint_names=("root", "l_a", "r_b"))
    with pytest.raises(ValueError, match="unknown joint 'r_a'"):
        s.left_right_pairs
