"""docs/protocol.md against the code that makes the messages (streamer/protocol.py).

A client writer reads the doc, not the code: its example meta, pose and end messages must parse
as JSON and carry exactly the fields the publisher sends, each field must have a row in its
table (and no row may name a field that is gone), and its ten-line Python client must work as
written against a real `Publisher`.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engines.skeleton import H36M17
from streamer.axes import axes_meta, axes_spec
from streamer.protocol import END_REASONS, PersonPose, PoseFrame, end_message, meta_message, pose_message

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
DOC_ENDPOINT = "tcp://127.0.0.1:5556"
ROW = re.compile(r"^\| `([^`]+)` \|", re.M)


def _section(title: str) -> str:
    """The text of `## title`, up to the next `## ` heading."""
    text = DOC.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def _example(title: str) -> dict:
    block = re.search(r"```json\n(.*?)```", _section(title), re.S)
    assert block, f"docs/protocol.md's '{title}' section has no JSON example"
    return json.loads(block.group(1))


def _rows(title: str) -> set[str]:
    return set(ROW.findall(_section(title)))


def _meta() -> dict:
    return meta_message(H36M17, "walk", (640, 480), 30.0,
                        {"weights": "w", "trained": True, "file": "m.onnx", "backend": "onnxruntime (cpu)"},
                        axes=axes_meta(axes_spec("camera")),
                        camera={"fx": 554.3, "fy": 554.3, "cx": 320.0, "cy": 240.0, "focal": "assumed",
                                "principal": "the image centre"})


def _pose(seq: int = 42, image: str | None = None) -> dict:
    rng = np.random.default_rng(seq)
    person = PersonPose(0, 0.83, (1.0, 2.0, 3.0, 4.0), rng.normal(size=(17, 3)), rng.uniform(0, 300, (17, 2)),
                        rng.uniform(0, 1, 17), rng.normal(size=3))
    return pose_message(PoseFrame(seq, 1764036000.123456, seq / 30.0, (640, 480), [person], image))


def test_the_meta_example_is_what_the_publisher_sends() -> None:
    doc, code = _example("meta"), _meta()
    assert set(doc) == set(code)
    assert doc["schema"] == code["schema"] and doc["type"] == "meta"
    for key in ("skeleton", "joint_names", "parents", "origin", "units", "axes"):
        assert doc[key] == code[key], key
    assert set(doc["camera"]) == set(code["camera"])
    assert set(doc["model"]) == set(code["model"])


def test_the_end_example_is_what_the_publisher_sends() -> None:
    doc = _example("end")
    # The publisher adds t_publish to the message as it sends it.
    assert set(doc) == set(end_message("walk", "end_of_input", 795, 794)) | {"t_publish"}
    assert doc["reason"] in END_REASONS and doc["last_seq"] == doc["poses"] - 1


def test_the_pose_example_is_what_a_track_file_holds() -> None:
    doc, code = _example("pose"), _pose()
    assert set(doc) == set(code)                 # a track file's pose: no t_publish, no image
    assert set(doc["people"][0]) == set(code["people"][0])


def test_every_field_has_a_row_and_every_row_a_field() -> None:
    """type and schema are in every message (schema's row is meta's); an end message's source is
    meta's too. A pose's t_publish and image are added on the wire and for image folders."""
    meta, end = _meta(), {**end_message("walk", "stopped", 0, None), "t_publish": 0.0}
    pose = {**_pose(image="a.jpg"), "t_publish": 0.0}
    meta_fields = set(meta) - {"type"} | {"replay"} | {f"model.{k}" for k in ("trained",)}
    pose_fields = (set(pose) - {"type", "schema"}) | {f"people[].{k}" for k in pose["people"][0]}
    end_fields = set(end) - {"type", "schema", "source"}
    assert _rows("meta") == meta_fields
    assert _rows("end") == end_fields
    assert _rows("pose") == pose_fields


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_doc_python_client_works_as_written(tmp_path: Path) -> None:
    from streamer.publish import Publisher

    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert DOC_ENDPOINT in code
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    script = tmp_path / "client.py"
    script.write_text(code.replace(DOC_ENDPOINT, endpoint))
    pub = Publisher(endpoint)
    client = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        pub.start("walk", _meta())
        deadline = time.monotonic() + 30
        while pub.subscriptions < 3:            # meta., pose. and end.: the client has subscribed to all
            assert time.monotonic() < deadline and client.poll() is None, "the doc's client did not subscribe"
            pub.tick()
            time.sleep(0.01)
        poses = [_pose(seq) for seq in range(3)]
        for pose in poses:
            pub.publish(pose)
        pub.end("end_of_input")
        out, err = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
        pub.close()
    assert client.returncode == 0, err
    expected = [f"{p['seq']} {p['people'][0]['joints_3d'][10]}" for p in poses] + ["the stream ended: end_of_input"]
    assert out.splitlines() == expected


@pytest.mark.parametrize("title", ["meta", "end", "pose"])
def test_each_message_section_has_an_example_and_a_table(title: str) -> None:
    assert _example(title)["type"] == title
    assert _rows(title)
