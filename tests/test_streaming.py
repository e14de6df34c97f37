"""Streaming: the ZeroMQ publisher, `posecast run` (a file played as a live source), `listen` and
`replay`.

The publisher is tested in-process against real SUB sockets; the commands run as real processes
(the `posecast` fixture checks each run for leftover processes, rings and socket folders). No test
asserts a speed: the timing checks are pace comparisons with generous bounds. Ports are picked
free by binding port 0.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from engines.errors import PosecastError
from streamer.protocol import PersonPose, PoseFrame, meta_message, pose_message
from streamer.publish import MAX_SUBSCRIPTION_BYTES, Publisher, PortInUseError, decode, encode
from streamer.tracks import read_track

LIVE_FRAMES, LIVE_FPS = 90, 30.0          # the clip90 fixture
LIVE_SLOTS = 3                            # configs/pipeline.yaml ring.live_slots: frames that can wait for output
SUMMARY = re.compile(r"posecast: (\d+) frames in ([\d.]+) s .*?(?:; (\d+) stale frames dropped to stay live)?$",
                     re.MULTILINE)


# --- helpers -----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoint(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


def sample_meta(source: str = "cam") -> dict[str, Any]:
    from engines.model_file import default_model_config

    skel = default_model_config().skeleton
    return meta_message(skel, source, (320, 240), 30.0, {"weights": "test", "trained": False})


def sample_pose(seq: int, people: int = 1, t_capture: float | None = None) -> dict[str, Any]:
    rng = np.random.default_rng(seq)
    persons = [PersonPose(0, 0.5, (1.0, 2.0, 30.5, 40.25), rng.normal(size=(17, 3)), rng.uniform(0, 300, (17, 2)),
                          rng.uniform(0, 1, 17)) for _ in range(people)]
    t = time.time() if t_capture is None else t_capture
    return pose_message(PoseFrame(seq, t, seq / 30.0, (320, 240), persons))


def without_publish(msg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in msg.items() if k != "t_publish"}


def make_sub(ctx: zmq.Context, port: int, topics: tuple[bytes, ...] = (b"",), rcvhwm: int | None = None) -> zmq.Socket:
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    # Until the publisher binds, ZeroMQ retries the connection this often: every 10 ms instead of
    # 100, so a subscriber that was there first is connected before the first pose goes out.
    sub.setsockopt(zmq.RECONNECT_IVL, 10)
    if rcvhwm is not None:
        sub.setsockopt(zmq.RCVHWM, rcvhwm)
    for t in topics:
        sub.setsockopt(zmq.SUBSCRIBE, t)
    sub.connect(endpoint(port))
    return sub


def recv_until(sub: zmq.Socket, pub: Publisher, want: bytes, timeout: float = 5.0,
               make=lambda i: sample_pose(i)) -> tuple[bytes, dict[str, Any], list[tuple[bytes, dict]]]:
    """Publish a pose every 10 ms until a message whose topic starts with `want` arrives; returns
    it and everything received before it."""
    seen: list[tuple[bytes, dict]] = []
    deadline = time.monotonic() + timeout
    i = 0
    while time.monotonic() < deadline:
        pub.publish(make(i))
        i += 1
        while sub.poll(10):
            topic, payload = sub.recv_multipart()
            if topic.startswith(want):
                return topic, decode(payload), seen
            seen.append((topic, decode(payload)))
    pytest.fail(f"no '{want.decode()}' message within {timeout:.0f} s (got {[t for t, _ in seen][:5]}...)")


class Collector:
    """A SUB socket in a thread of the test process, collecting (receive time, topic, first
    payload byte, message) until stopped. Connects before the publisher exists: ZeroMQ retries."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.items: list[tuple[float, bytes, bytes, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Collector":
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        ctx = zmq.Context()
        sub = make_sub(ctx, self.port)
        self._ready.set()
        try:
            while not self._stop.is_set():
                if sub.poll(50):
                    topic, payload = sub.recv_multipart()
                    self.items.append((time.monotonic(), topic, payload[:1], decode(payload)))
        finally:
            sub.close()
            ctx.term()

    @property
    def poses(self) -> list[dict[str, Any]]:
        return [m for _, t, _, m in list(self.items) if t.startswith(b"pose.")]

    @property
    def metas(self) -> list[dict[str, Any]]:
        return [m for _, t, _, m in list(self.items) if t.startswith(b"meta.")]

    def wait_end(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The end messages, once one has come (or the timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not any(t.startswith(b"end.") for _, t, _, _ in list(self.items)):
            time.sleep(0.02)
        return [m for _, t, _, m in list(self.items) if t.startswith(b"end.")]

    def wait_poses(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Until pose `seq` n - 1 (the n-th of the stream) has arrived, or the timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            poses = self.poses
            if poses and poses[-1]["seq"] >= n - 1:
                break
            time.sleep(0.02)
        return self.poses


def assert_stream_is_the_track(received: list[dict[str, Any]], poses: list[dict[str, Any]], max_late: int) -> int:
    """The messages a subscriber got are the track's lines (apart from `t_publish`), every one of
    them from its first on. It may have missed the first few: a subscriber that was there before
    the publisher bound still needs a moment to connect, and a stage that starts last can find
    frames already waiting for it (ZeroMQ PUB/SUB delivers only what is sent after a subscription
    arrives). Returns how many it missed."""
    assert received, "the subscriber got no pose message"
    late = received[0]["seq"]
    assert 0 <= late <= max_late, f"the subscriber missed the first {late} messages"
    assert [without_publish(m) for m in received] == poses[late:]
    assert all(m["t_publish"] >= m["t_capture"] for m in received)
    return late


def summary(stderr: str) -> tuple[int, float, int]:
    """(frames, seconds, stale frames dropped) from the run's summary line."""
    m = SUMMARY.search(stderr)
    assert m, stderr
    return int(m.group(1)), float(m.group(2)), int(m.group(3) or 0)


def wait_for_lines(path: Path, n: int, proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        assert proc.poll() is None, f"posecast ended early ({proc.returncode}): {proc.stderr.read()}"
        time.sleep(0.02)
    pytest.fail(f"{path} did not reach {n} lines in {timeout:.0f} s")


def one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("posecast: error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def write_paced_track(src: Path, dst: Path, fps: float = 30.0) -> tuple[dict, list[dict]]:
    """`src` again as a camera's recording: t_capture spaced 1/fps apart and no t_media, so a
    replay is paced by t_capture (a track made by `track` runs faster than real time)."""
    meta, poses = read_track(src)
    t0 = 1_700_000_000.0
    for i, p in enumerate(poses):
        p["t_capture"] = round(t0 + i / fps, 6)
        p["t_media"] = None
    dst.write_text("".join(json.dumps(m, separators=(",", ":")) + "\n" for m in [meta, *poses]))
    return meta, poses


# --- the publisher, in-process -----------------------------------------------------------------

@pytest.fixture
def zctx():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def publisher():
    pubs: list[Publisher] = []

    def make(encoding: str = "msgpack", hwm: int = 64, meta_interval_s: float = 60.0, source: str = "cam",
             port: int | None = None) -> Publisher:
        pub = Publisher(endpoint(port or free_port()), encoding, hwm, meta_interval_s)
        pubs.append(pub)
        pub.start(source, sample_meta(source))
        return pub

    yield make
    for p in pubs:
        p.close(linger_ms=0)


def port_of(pub: Publisher) -> int:
    return int(pub.endpoint.rsplit(":", 1)[1])


def test_meta_on_subscription_mid_stream_and_on_resubscription(publisher, zctx) -> None:
    pub = publisher(source="cam7")          # meta_interval 60 s: every meta below was asked for
    for i in range(50):                     # the stream is well under way before anyone joins
        pub.publish(sample_pose(i))
    sub = make_sub(zctx, port_of(pub), (b"meta.", b"pose."))
    topic, meta, before = recv_until(sub, pub, b"meta.")
    assert topic == b"meta.cam7"
    assert meta == sample_meta("cam7")
    assert all(t == b"pose.cam7" for t, _ in before)

    def topics_for(seconds: float) -> list[bytes]:
        got, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            pub.publish(sample_pose(0))
            while sub.poll(10):
                got.append(sub.recv_multipart()[0])
        return got

    topics_for(0.3)                         # drain whatever the two subscriptions asked for
    quiet = topics_for(0.3)
    assert quiet and b"meta.cam7" not in quiet       # poses only: meta is not sent unasked
    # Subscribing again (a client that lost the meta) asks for it again.
    sub.setsockopt(zmq.SUBSCRIBE, b"meta.")
    topic, again, before = recv_until(sub, pub, b"meta.")
    assert topic == b"meta.cam7" and again == meta
    assert all(t == b"pose.cam7" for t, _ in before)
    assert pub.subscriptions >= 3


def test_pose_topic_and_t_publish(publisher, zctx) -> None:
    pub = publisher(source="walk")
    sub = make_sub(zctx, port_of(pub), (b"pose.",))
    topic, msg, _ = recv_until(sub, pub, b"pose.")
    assert topic == b"pose.walk"
    assert msg["type"] == "pose" and msg["t_publish"] >= msg["t_capture"]
    assert abs(msg["t_publish"] - time.time()) < 60
    assert without_publish(msg) == sample_pose(msg["seq"], t_capture=msg["t_capture"])
    assert pub.sent >= 1


@pytest.mark.parametrize("people", [0, 1])
def test_msgpack_and_json_payloads_decode_to_the_same_dict(people: int) -> None:
    msg = sample_pose(3, people=people)
    packed, text = encode(msg, "msgpack"), encode(msg, "json")
    assert text[:1] == b"{" and packed[:1] != b"{"
    assert decode(packed) == decode(text) == msg
    meta = sample_meta()
    assert decode(encode(meta, "msgpack")) == decode(encode(meta, "json")) == meta


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
def test_either_encoding_over_the_wire(publisher, zctx, encoding: str) -> None:
    pub = publisher(encoding=encoding)
    sub = make_sub(zctx, port_of(pub), (b"pose.",))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pub.publish(sample_pose(1))
        if sub.poll(10):
            break
    _, payload = sub.recv_multipart()
    assert (payload[:1] == b"{") == (encoding == "json")
    msg = decode(payload)
    assert without_publish(msg) == sample_pose(1, t_capture=msg["t_capture"])


def test_port_in_use_is_a_one_line_error(publisher) -> None:
    pub = publisher()
    with pytest.raises(PortInUseError) as exc:
        Publisher(pub.endpoint)
    assert exc.value.exit_code == 2
    text = str(exc.value)
    assert "\n" not in text and pub.endpoint in text and "already in use" in text and "--port" in text

    # Any other program holding the port, too.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = endpoint(s.getsockname()[1])
        with pytest.raises(PortInUseError, match=re.escape(taken)):
            Publisher(taken)


@pytest.mark.parametrize("bad", ["tcp://no-such-interface-xyz:5556", "tcp://203.0.113.9:5556", "tcp://127.0.0.1:notaport"])
def test_bad_bind_address_is_a_clear_error(bad: str) -> None:
    with pytest.raises(PosecastError) as exc:
        Publisher(bad)
    assert exc.value.exit_code == 2
    text = str(exc.value)
    assert "\n" not in text and bad in text and "--bind or publish.bind" in text   # a --config file's key too


@pytest.mark.parametrize("host", ["::1", "[::1]", "no-such-interface-xyz", "203.0.113.9", "tcp://127.0.0.1"])
def test_a_bind_address_not_of_this_machine_is_said_so(host: str) -> None:
    """ZeroMQ says "No such device" (a name, an IPv6 address, a URL given as --bind) or "Cannot
    assign requested address" (another machine's): said as what they mean here."""
    with pytest.raises(PosecastError) as exc:
        Publisher(f"tcp://{host}:0")
    assert str(exc.value) == (f"cannot publish on tcp://{host}:0: '{host}' is not an IPv4 address or interface of "
                              f"this machine (check --bind or publish.bind: 127.0.0.1 for this machine alone, "
                              f"0.0.0.0 for all its interfaces; IPv6 is not supported)")


def test_the_publisher_never_blocks_a_stalled_subscriber_loses_messages(publisher, zctx) -> None:
    hwm = 8
    pub = publisher(hwm=hwm)
    stalled = make_sub(zctx, port_of(pub), (b"pose.",), rcvhwm=hwm)
    recv_until(stalled, pub, b"pose.")            # connected and subscribed; from now on, never read
    pad = "x" * 20_000                            # 100 MB in all: far beyond any socket buffer
    total = 5000
    done = threading.Event()
    failure: list[BaseException] = []

    def flood() -> None:
        try:
            for i in range(total):
                msg = sample_pose(i, people=0)
                msg["pad"] = pad
                pub.publish(msg)
            done.set()
        except BaseException as exc:      # noqa: BLE001 - reported below
            failure.append(exc)

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    t.join(10)
    assert not failure, failure
    assert done.is_set(), "publish() blocked on a subscriber that does not read"

    time.sleep(0.2)
    seqs = []
    while stalled.poll(500):
        _, payload = stalled.recv_multipart()
        msg = decode(payload)
        if "pad" in msg:
            seqs.append(msg["seq"])
    # It got what fitted in its queues and the socket buffers, nothing like the whole stream:
    # messages were dropped for it, the publisher went on.
    assert 0 < len(seqs) < total // 4, len(seqs)
    assert seqs == sorted(seqs)
    print(f"stalled subscriber (hwm {hwm}) received {len(seqs)} of {total}: seq {seqs[0]}..{seqs[-1]}")


def test_a_stalled_subscriber_finds_hundreds_of_old_poses_waiting_not_thousands(publisher, zctx) -> None:
    """The publisher's kernel buffer for each subscriber is capped (`SNDBUF_BYTES`): Linux grew it
    to 4 MB, which held about 3,000 old poses for a subscriber that stalled (and pinned 4 MB of
    kernel memory for each such subscriber). What waits is counted after 6,000 poses went out
    while it read nothing; the subscriber's own queues are kept small, so the count is mostly
    the publisher's."""
    pub = publisher(source="cam")
    sub = make_sub(zctx, port_of(pub), (b"pose.",), rcvhwm=4)
    sub.setsockopt(zmq.RCVBUF, 4096)
    recv_until(sub, pub, b"pose.")
    for i in range(6000):
        pub.publish(sample_pose(i))
        if i % 100 == 0:
            time.sleep(0.01)                   # the kernel moves what it can meanwhile
    waiting = 0
    while sub.poll(500):
        sub.recv_multipart()
        waiting += 1
    # Measured here: 2,400-2,975 waited without the cap, 575-607 with it.
    assert 0 < waiting < 1200, waiting


def test_a_subscriber_that_vanishes_does_not_break_publishing(publisher, zctx) -> None:
    pub = publisher()
    gone = make_sub(zctx, port_of(pub), (b"",))
    recv_until(gone, pub, b"pose.")
    for i in range(100):
        pub.publish(sample_pose(i))
    gone.close(linger=0)                          # abruptly, with messages queued for it
    for i in range(2000):
        pub.publish(sample_pose(i, people=0))
    # Still publishing to whoever comes next.
    late = make_sub(zctx, port_of(pub), (b"",))
    topic, _, _ = recv_until(late, pub, b"meta.")
    assert topic == b"meta.cam"
    topic, msg, _ = recv_until(late, pub, b"pose.")
    assert msg["type"] == "pose"


def zmtp_frame(body: bytes, command: bool = False) -> bytes:
    flags = (0x04 if command else 0x00) | (0x02 if len(body) > 255 else 0x00)
    return bytes([flags]) + (struct.pack(">Q", len(body)) if len(body) > 255 else bytes([len(body)])) + body


def raw_subscriber(port: int) -> socket.socket:
    """A TCP connection speaking ZMTP 3.0 as a SUB by hand, so it can send what no ZeroMQ library
    would."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + bytes(32))
    s.sendall(zmtp_frame(b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 3) + b"SUB", command=True))
    # The handshake ends with the publisher's greeting and READY: a message sent sooner is refused.
    greeting, ready = recv_exactly(s, 64), recv_exactly(s, 2)
    ready += recv_exactly(s, ready[1])
    assert greeting[:1] == b"\xff" and ready[2:8] == b"\x05READY", (greeting, ready)
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        assert chunk, "the publisher closed the connection during the handshake"
        data += chunk
    return data


def closed_by_peer(s: socket.socket, pub: Publisher, deadline_s: float = 10.0) -> bool:
    """Publishes while reading `s` to its end; False if the publisher still holds it open."""
    s.settimeout(0.02)
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        pub.publish(sample_pose(0, people=0))
        try:
            if s.recv(1 << 16) == b"":
                return True
        except socket.timeout:
            pass
        except ConnectionError:
            return True
    return False


def test_a_subscription_too_long_closes_that_subscriber_only(publisher, zctx) -> None:
    """ZeroMQ keeps a subscription at about 116 bytes a byte: one of megabytes from a rogue or
    broken subscriber would take gigabytes of the publisher's memory (300 MB got it killed)."""
    source = "s" * 255                            # the longest file stem: its full topic is still taken
    pub = publisher(source=source)
    whole_topic = make_sub(zctx, port_of(pub), (f"pose.{source}".encode(),))
    recv_until(whole_topic, pub, b"pose.")
    assert pub.subscriptions == 1
    rogue = raw_subscriber(port_of(pub))
    try:
        with contextlib.suppress(ConnectionError):       # refused as it arrives: closed_by_peer says so
            rogue.sendall(zmtp_frame(b"\x01" + b"z" * (16 * MAX_SUBSCRIPTION_BYTES)))
        assert closed_by_peer(rogue, pub), "the publisher kept a 64 KiB subscription"
    finally:
        rogue.close()
    assert pub.subscriptions == 1 and pub.pose_subscribers == 1
    topic, msg, _ = recv_until(whole_topic, pub, b"pose.")     # the others go on
    assert topic == f"pose.{source}".encode() and msg["type"] == "pose"


# --- track --publish, replay, listen -----------------------------------------------------------

def test_track_publishes_what_it_writes_then_replay_and_listen(posecast, clip40: Path, tmp_path: Path) -> None:
    # track --publish (JSON): a subscriber that was there first gets the meta and the file's lines.
    port = free_port()
    track = tmp_path / "t.jsonl"
    with Collector(port) as c:
        r = posecast.run(["track", clip40, "-o", track, "--publish", "--port", port, "--encoding", "json",
                          "--min-score", "0", "--no-progress"])
        assert r.returncode == 0, r.stderr
        c.wait_poses(40)
        ends = c.wait_end()
    assert f"publishing on {endpoint(port)} (topics pose.*, meta.*, end.*)" in r.stderr
    # The stream's last message says it ended with the file, after its 40 poses.
    assert [{k: v for k, v in m.items() if k != "t_publish"} for m in ends] == [
        {"type": "end", "schema": 1, "source": clip40.stem, "reason": "end_of_input", "poses": 40, "last_seq": 39}]
    assert c.items[-1][1] == f"end.{clip40.stem}".encode()
    meta, poses = read_track(track)
    assert len(poses) == 40 and all(p["people"] for p in poses)
    assert c.metas and all(m == meta for m in c.metas)
    late = assert_stream_is_the_track(c.poses, poses, max_late=8)      # at most one batch (0 in practice)
    if late:
        print(f"track --publish: the subscriber missed the first {late} messages")
    assert {first for _, _, first, _ in c.items} == {b"{"}             # JSON payloads

    # replay (msgpack): the same 40, in order, at the track's pace.
    paced = tmp_path / "paced.jsonl"
    meta, poses = write_paced_track(track, paced)
    span = poses[-1]["t_capture"] - poses[0]["t_capture"]
    port2 = free_port()
    with Collector(port2) as c:
        r = posecast.run(["replay", paced, "--port", port2])
        assert r.returncode == 0, r.stderr
        got = c.wait_poses(40)
        items = [(t, m) for t, topic, _, m in c.items if topic.startswith(b"pose.")]
    assert [m["seq"] for m in got] == list(range(40))
    assert [without_publish(m) for m in got] == poses
    assert c.metas and c.metas[0] == {**meta, "replay": True}         # its t_capture are the recording's
    assert {first for _, _, first, _ in c.items} != {b"{"}             # msgpack
    took = items[-1][0] - items[0][0]
    assert took >= 0.5 * span, (took, span)

    # replay of the file's own track: at the video's pace (t_media), not the processing's.
    media_span = read_track(track)[1][-1]["t_media"]
    assert media_span == pytest.approx(39 / 30, abs=0.01)
    port4 = free_port()
    with Collector(port4) as c:
        r = posecast.run(["replay", track, "--port", port4])
        assert r.returncode == 0, r.stderr
        c.wait_poses(40)
        stamps = [t for t, topic, _, _ in c.items if topic.startswith(b"pose.")]
    assert stamps[-1] - stamps[0] >= 0.8 * media_span, (stamps[-1] - stamps[0], media_span)

    # listen --record against replay, to the stream's end, which the recording keeps.
    port3 = free_port()
    rec = tmp_path / "rec.jsonl"
    listener = posecast.start(["listen", "--connect", endpoint(port3), "--record", rec,
                               "--timeout", 20, "--no-skeleton"])
    time.sleep(1.5)                        # subscribed before the replay starts (ZeroMQ retries the connect)
    player = posecast.start(["replay", paced, "--port", port3, "--speed", 2])
    rl = posecast.finish(listener, timeout=60)
    rp = posecast.finish(player, timeout=60)
    assert rp.returncode == 0, rp.stderr
    assert rl.returncode == 0, rl.stderr
    lines = rec.read_text().splitlines()
    assert len(lines) == 1 + 40 + 1
    assert {k: v for k, v in json.loads(lines[-1]).items() if k != "t_publish"} == {
        "type": "end", "schema": 1, "source": meta["source"], "reason": "end_of_input", "poses": 40, "last_seq": 39}
    rmeta, rposes = read_track(rec)
    assert rmeta == {**meta, "replay": True}
    assert [without_publish(p) for p in rposes] == poses
    assert all("t_publish" in p for p in rposes)
    last = rl.stdout.splitlines()[-1]
    assert "40 msgs" in last and "lost 0" in last and "pipeline p50 n/a (a replay)" in last, last


def test_a_run_that_waits_for_subscribers_holds_its_first_frame_until_they_come(posecast, clip40: Path,
                                                                                 tmp_path: Path) -> None:
    """A file given to `run` plays at once; with --wait-subscribers, a subscriber that comes
    seconds later still gets every frame from the first. A meta subscription is not a reader of
    poses."""
    port = free_port()
    proc = posecast.start(["run", clip40, "--port", port, "--wait-subscribers", 1, "--no-progress"])
    said = ""
    while "waiting for 1 more subscriber(s)" not in said and proc.poll() is None:
        said += proc.stderr.readline()
    ctx = zmq.Context()
    metas_only = make_sub(ctx, port, topics=(b"meta.",))
    try:
        assert metas_only.poll(10_000), said                   # the meta is given while it waits
        time.sleep(1.0)
        assert proc.poll() is None
        with Collector(port) as c:
            r = posecast.finish(proc, timeout=120)
            # A file given to `run` is live: on a loaded machine it drops frames to keep its pace,
            # and counts them; every frame it published is received, from the first.
            frames, _, dropped = summary(r.stderr)
            c.wait_poses(frames)
    finally:
        metas_only.close(linger=0)
        ctx.term()
    assert r.returncode == 0, said + r.stderr
    assert frames + dropped == 40, r.stderr
    assert [m["seq"] for m in c.poses] == list(range(frames))
    assert c.poses[0]["t_media"] == 0.0                        # the file's first frame, held for them


def test_publisher_counts_the_subscribers_that_read_poses() -> None:
    port = free_port()
    publisher = Publisher(endpoint(port))
    publisher.start("cam", sample_meta("cam"))
    ctx = zmq.Context()
    subs = [make_sub(ctx, port, topics=t) for t in ((b"pose.",), (b"pose.",), (b"",), (b"meta.",), (b"pose.other",))]
    try:
        assert publisher.wait_for_subscribers(3, lambda: False)
        time.sleep(0.3)
        publisher.tick()
        assert publisher.pose_subscribers == 3 and publisher.subscriptions == 5
        # One of two with the same prefix leaves: counted (ZeroMQ says so only where asked to).
        subs[0].close(linger=0)
        deadline = time.monotonic() + 10
        while publisher.pose_subscribers != 2 and time.monotonic() < deadline:
            publisher.tick()
            time.sleep(0.02)
        assert publisher.pose_subscribers == 2
        assert not publisher.wait_for_subscribers(3, lambda: True)
    finally:
        for sub in subs:
            sub.close(linger=0)
        ctx.term()
        publisher.close(linger_ms=0)


@pytest.mark.parametrize("given", ["flag", "config"])
def test_bench_publishes_on_the_port_it_is_given(posecast, clip40: Path, tmp_path: Path, given: str) -> None:
    # Without a port it takes a free one (never the default that a `run` may hold); given one, by
    # --port or by its --config file's publish.port, a subscriber there sees the run.
    port = free_port()
    (tmp_path / "p.yaml").write_text(f"publish:\n  port: {port}\n")
    where = ["--port", port] if given == "flag" else ["--config", tmp_path / "p.yaml"]
    with Collector(port) as c:
        r = posecast.run(["bench", clip40, *where, "--min-score", "0", "--no-progress"])
        assert r.returncode == 0, r.stderr
        got = c.wait_poses(40)
    assert [m["seq"] for m in got][-1] == 39 and c.metas
    # Its report is its result: on standard output, so `posecast bench X > report.txt` keeps it.
    assert "40 frames in" in r.stdout and "infer.infer" in r.stdout and "capture_to_publish" in r.stdout


def test_track_publishes_where_its_config_says_so_without_the_flag(posecast, clip40: Path, tmp_path: Path) -> None:
    # publish.enabled in a --config file is --publish: a track with no other output is no mistake.
    port = free_port()
    (tmp_path / "p.yaml").write_text(f"publish:\n  enabled: true\n  port: {port}\n  wait_subscribers: 1\n")
    with Collector(port) as c:
        r = posecast.run(["track", clip40, "--config", tmp_path / "p.yaml", "--min-score", "0", "--no-progress"])
        assert r.returncode == 0, r.stderr
        got = c.wait_poses(40)
    assert [m["seq"] for m in got] == list(range(40))          # waited for the subscriber: none missed


def test_replay_is_paced_by_the_video_time_where_every_message_has_one() -> None:
    from streamer.replay import replay_clock

    assert replay_clock([{"t_capture": 5.0, "t_media": 0.0}, {"t_capture": 5.01, "t_media": 0.04}]) == "t_media"
    # A camera's recording has no video time, and a looped file's goes back at each loop.
    assert replay_clock([{"t_capture": 5.0, "t_media": None}, {"t_capture": 5.04, "t_media": None}]) == "t_capture"
    assert replay_clock([{"t_capture": 5.0, "t_media": 9.9}, {"t_capture": 5.04, "t_media": 0.0}]) == "t_capture"
    assert replay_clock([{"t_capture": 5.0, "t_media": 0.0}, {"t_capture": 5.04}]) == "t_capture"
    assert replay_clock([]) == "t_capture"


def test_replay_paces_each_run_of_a_recording_by_its_own_clock() -> None:
    from streamer.replay import replay_parts

    # Two runs of one publisher recorded as one (`seq` from 0 again), as a recording of a replay
    # has them: its `t_capture` goes back too. Each run by its video time, the second a frame
    # period after the first, and announced by its meta as the publisher did.
    run = [{"seq": i, "t_media": i / 10, "t_capture": 100.0 + i / 50} for i in range(5)]
    parts = replay_parts(run + run)
    assert [p.restarts for p in parts] == [False, True]
    assert [o for p in parts for o in p.offsets] == pytest.approx([i / 10 for i in range(10)])
    # A looped file: `seq` goes on and the video time starts again; no restart.
    parts = replay_parts([{**m, "seq": i} for i, m in enumerate(run + run)])
    assert [p.restarts for p in parts] == [False, False]
    assert [o for p in parts for o in p.offsets] == pytest.approx([i / 10 for i in range(10)])
    # A camera's run (no video time) by its capture times; one part.
    camera = [{**m, "t_media": None} for m in run]
    assert [o for p in replay_parts(camera) for o in p.offsets] == pytest.approx([i / 50 for i in range(5)])


def test_a_recording_of_a_restarted_stream_is_recorded_whole_again(posecast, tmp_path: Path) -> None:
    """`listen --record` records on through a restart of the same stream; replayed and recorded
    again, the second run's poses were held for a meta that never came, and left out."""
    meta = sample_meta("cam")
    run = [{**sample_pose(i, t_capture=1_700_000_000.0 + i / 30), "t_media": None} for i in range(10)]
    twice = tmp_path / "twice.jsonl"
    twice.write_text("".join(json.dumps(m, separators=(",", ":")) + "\n" for m in [meta, *run, *run]))
    port, rec = free_port(), tmp_path / "rec.jsonl"
    listener = posecast.start(["listen", "--connect", endpoint(port), "--record", rec, "--count", 20,
                               "--timeout", 20, "--no-skeleton"])
    time.sleep(1.5)                        # subscribed before the replay starts
    player = posecast.start(["replay", twice, "--port", port])
    rl = posecast.finish(listener, timeout=60)
    rp = posecast.finish(player, timeout=60)
    assert rp.returncode == 0, rp.stderr
    assert rl.returncode == 0, rl.stderr
    assert f"recorded 20 pose messages to '{rec}' (complete)" in rl.stderr
    assert [p["seq"] for p in read_track(rec)[1]] == [*range(10), *range(10)]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_block_s_screen_rows_count_its_wrapped_lines() -> None:
    from streamer.listen import screen_rows

    assert screen_rows("abc", 40) == 1 and screen_rows("", 40) == 1
    assert screen_rows("x" * 40, 40) == 1 and screen_rows("x" * 41, 40) == 2
    assert screen_rows("x" * 90 + "\n" + "o ." + "\n", 40) == 3 + 1 + 1


@contextlib.contextmanager
def _publishing_once_subscribed(port: int, seqs: list[int], interval_s: float,
                                ends_after: int | None = None) -> Iterator[None]:
    """A publisher on `port`, in a thread: once a subscriber has `listen`'s three topics, the
    poses `seqs`, one every `interval_s`; then, given `ends_after`, its end message as though it
    had sent poses up to that seq, those after the last of `seqs` lost on the way. Closed when
    the block ends (without an end message, unless given `ends_after`)."""
    publisher = Publisher(endpoint(port))

    def publish() -> None:
        publisher.start("cam", sample_meta("cam"))
        deadline = time.monotonic() + 20
        while publisher.subscriptions < 3 and time.monotonic() < deadline:     # meta, end and pose topics
            publisher.tick()
            time.sleep(0.01)
        for seq in seqs:
            publisher.publish(sample_pose(seq))
            time.sleep(interval_s)
        if ends_after is not None:
            publisher.run_sent += ends_after - publisher.last_seq
            publisher.last_seq = ends_after
            publisher.end("end_of_input")

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(30)
        publisher.close(linger_ms=0)


def _listen_on_a_terminal(record: Path | None) -> str:
    """What `listen` shows on a terminal of 25 poses published over 2.5 s (three blocks)."""
    from streamer.listen import listen

    port = free_port()
    out = _Terminal()
    with _publishing_once_subscribed(port, list(range(25)), 0.1):
        assert listen(endpoint(port), "pose.", record, 25, 20.0, True, out=out) == 0
    return out.getvalue()


def test_listen_on_a_terminal_draws_each_second_over_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamer.listen import screen_rows

    monkeypatch.setenv("COLUMNS", "40")            # the figures' line wraps: rows, not lines, are counted
    shown = _listen_on_a_terminal(None)
    # [before the first redraw, rows up, the block drawn, rows up, the block drawn, ...]
    parts = re.split(r"\x1b\[(\d+)F\x1b\[J", shown)
    assert len(parts) >= 5, shown                 # the first block, then at least two drawn over the last
    first = parts[0].splitlines()
    starts = [k for k, line in enumerate(first) if re.match(r"\d+ msgs ", line)]
    assert len(starts) == 1, parts[0]
    assert int(parts[1]) == screen_rows("\n".join(first[starts[0]:]), 40) > len(first) - starts[0]   # up over the block alone
    drawn = parts[2::2]
    for block, up in zip(drawn, parts[3::2]):
        assert re.match(r"\d+ msgs ", block) and int(up) == screen_rows(block.rstrip("\n"), 40), (block, up)
    # Each block is the figures and the skeleton; the last block is followed by the final figures.
    assert all(len(b.splitlines()) > 2 for b in drawn[:-1]), drawn


def test_listen_recording_on_a_terminal_scrolls(tmp_path: Path) -> None:
    """The recording's writer may warn between blocks (a slow named-pipe reader): a redraw would
    erase the warning."""
    shown = _listen_on_a_terminal(tmp_path / "rec.jsonl")
    assert "\x1b[" not in shown and len(re.findall(r"^\d+ msgs ", shown, re.M)) >= 3, shown


@pytest.mark.parametrize("suffix", [".jsonl", ".bvh"])
def test_a_recording_that_lost_messages_on_the_way_exits_3(tmp_path: Path, capsys, suffix: str) -> None:
    from streamer.listen import EXIT_RECORDING_INCOMPLETE, listen

    port, rec = free_port(), tmp_path / f"rec{suffix}"
    with _publishing_once_subscribed(port, [0, 1, 2, 6, 7, 8, 9], 0.01):          # 3 lost on the way
        rc = listen(endpoint(port), "pose.", rec, 7, 20.0, False, out=open(os.devnull, "w"))
    assert rc == EXIT_RECORDING_INCOMPLETE == 3
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and said[0].startswith(f"posecast: error: recorded 7 pose messages to '{rec}', but 3 were "
                                                 f"lost on the way (gaps in `seq`"), said
    if suffix == ".jsonl":
        assert [p["seq"] for p in read_track(rec)[1]] == [0, 1, 2, 6, 7, 8, 9]
    else:
        # An animation keeps its time: the lost messages' rows hold the pose before them.
        from train.motion import bvh_forward_kinematics, parse_bvh

        clip = parse_bvh(rec.read_text())
        joints = bvh_forward_kinematics(clip.skeleton, clip.motion)
        assert len(joints) == 10
        assert np.allclose(joints[3], joints[2], atol=0.01) and np.allclose(joints[5], joints[2], atol=0.01)
        assert not np.allclose(joints[6], joints[2], atol=0.01)


def test_listen_with_nobody_publishing_exits_2(posecast) -> None:
    port = free_port()
    t0 = time.monotonic()
    r = posecast.run(["listen", "--connect", endpoint(port), "--timeout", 1], timeout=60)
    assert r.returncode == 2, r.stderr
    assert time.monotonic() - t0 >= 1.0
    line = one_error_line(r.stderr)
    assert endpoint(port) in line and "in 1 s" in line
    assert r.stderr.strip().splitlines() == [line]


def test_replay_on_a_port_in_use_exits_2(posecast, tmp_path: Path) -> None:
    track = tmp_path / "t.jsonl"
    track.write_text(json.dumps(sample_meta()) + "\n" + json.dumps(sample_pose(0)) + "\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = posecast.run(["replay", track, "--port", port], timeout=60)
    assert r.returncode == 2, r.stderr
    line = one_error_line(r.stderr)
    assert endpoint(port) in line and "already in use" in line


# --- posecast run: a file played as a live source ----------------------------------------------

def run_live(posecast, clip: Path, port: int, *extra: Any) -> tuple[Any, float]:
    t0 = time.monotonic()
    r = posecast.run(["run", clip, "--port", port, "--min-score", "0", "--no-progress", *extra], timeout=90)
    return r, time.monotonic() - t0


def test_a_stalled_subscriber_does_not_change_the_pace(posecast, clip90: Path, tmp_path: Path, zctx) -> None:
    """A subscriber that connects and never reads: every frame is still captured when the clip's
    time says (the frames' capture stamps span its media time, as without one: the next test),
    and the run ends (posecast.run's timeout would fail a hang at exit)."""
    port = free_port()
    stalled = make_sub(zctx, port, (b"",))        # connects, subscribes, never reads (default hwm)
    track = tmp_path / "stalled.jsonl"
    slow, slow_wall = run_live(posecast, clip90, port, "-o", track)
    assert slow.returncode == 0, slow.stderr
    s_frames, s_seconds, s_dropped = summary(slow.stderr)
    assert s_frames + s_dropped == LIVE_FRAMES, slow.stderr
    # A publisher held up by the subscriber would hold up the output, and the capture would drop
    # what it could not hand on (a 150 ms wait a message dropped 67 of 90).
    assert s_dropped <= LIVE_FRAMES // 10, slow.stderr
    _, poses = read_track(track)
    t_media = [p["t_media"] for p in poses]
    t_capture = [p["t_capture"] for p in poses]
    assert t_capture[-1] - t_capture[0] == pytest.approx(t_media[-1] - t_media[0], abs=0.25)

    got = 0
    while stalled.poll(200):
        topic, _ = stalled.recv_multipart()
        got += topic.startswith(b"pose.")
    assert got <= s_frames
    print(f"stalled subscriber: {s_frames} + {s_dropped} in {s_seconds:.2f} s ({slow_wall:.1f} s wall), "
          f"it had {got} pose messages waiting")


def test_run_plays_a_file_in_real_time_and_publishes_what_it_records(posecast, clip90: Path, tmp_path: Path) -> None:
    port = free_port()
    track = tmp_path / "live.jsonl"
    with Collector(port) as c:
        r, wall = run_live(posecast, clip90, port, "-o", track)
        assert r.returncode == 0, r.stderr
        frames, seconds, dropped = summary(r.stderr)
        c.wait_poses(frames)
    assert f"publishing on {endpoint(port)}" in r.stderr
    assert frames + dropped == LIVE_FRAMES
    duration = LIVE_FRAMES / LIVE_FPS
    # The summary's clock starts as the output stage lets the capture read: just before the first
    # frame. The frames' own capture times below are the exact pace check.
    assert wall >= 0.8 * duration and seconds >= 0.6 * duration

    meta, poses = read_track(track)
    assert len(poses) == frames
    assert meta["fps"] == pytest.approx(LIVE_FPS)
    assert [p["seq"] for p in poses] == list(range(frames))       # dropped frames are not numbered
    t_media = [p["t_media"] for p in poses]
    assert all(b > a for a, b in zip(t_media, t_media[1:])), t_media
    assert t_media[-1] >= 0.9 * (LIVE_FRAMES - 1) / LIVE_FPS      # played to the end
    t_capture = [p["t_capture"] for p in poses]
    assert all(b > a for a, b in zip(t_capture, t_capture[1:]))
    # Each frame is captured when a camera would have delivered it: the run takes the clip's
    # duration, not the time to decode it.
    assert t_capture[-1] - t_capture[0] >= 0.8 * duration
    assert t_capture[-1] - t_capture[0] == pytest.approx(t_media[-1] - t_media[0], abs=0.25)

    assert c.metas and c.metas[0] == meta
    late = assert_stream_is_the_track(c.poses, poses, max_late=LIVE_SLOTS + 2)
    print(f"run: {frames} frames + {dropped} dropped in {seconds:.2f} s ({wall:.1f} s wall); "
          f"the subscriber missed the first {late}")


def test_ctrl_c_during_run(posecast, clip90: Path, tmp_path: Path) -> None:
    port = free_port()
    track = tmp_path / "t.jsonl"
    with Collector(port) as c:
        proc = posecast.start(["run", clip90, "--port", port, "-o", track, "--min-score", "0", "--no-progress"],
                              start_new_session=True)
        wait_for_lines(track, 10, proc)
        os.killpg(proc.pid, signal.SIGINT)         # what the terminal does: the whole group
        r = posecast.finish(proc, timeout=30)
        assert r.returncode == 130, r.stderr
        assert "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines()[-1] == "posecast: interrupted (SIGINT); everything processed so far was written"
        meta, poses = read_track(track)
        c.wait_poses(len(poses), timeout=5)
    assert 9 <= len(poses) < LIVE_FRAMES
    assert [p["seq"] for p in poses] == list(range(len(poses)))
    frames, _, dropped = summary(r.stderr)
    assert frames == len(poses) and frames + dropped < LIVE_FRAMES
    # The stream's subscribers got what the file got, up to the last frame.
    assert_stream_is_the_track(c.poses, poses, max_late=LIVE_SLOTS + 2)


# --- listen and replay: failure paths ----------------------------------------------------------

def write_sample_track(path: Path, frames: int, fps: float) -> tuple[dict, list[dict]]:
    """A camera's recording made of sample messages (no model run): replayed by t_capture."""
    meta = sample_meta("cam")
    poses = []
    for i in range(frames):
        p = sample_pose(i, t_capture=round(1_700_000_000.0 + i / fps, 6))
        p["t_media"] = None
        poses.append(p)
    path.write_text("".join(json.dumps(m, separators=(",", ":")) + "\n" for m in [meta, *poses]))
    return read_track(path)


@pytest.mark.parametrize("sig, suffix", [(signal.SIGTERM, ".jsonl"), (signal.SIGTERM, ".npz"),
                                         (signal.SIGHUP, ".jsonl"), (signal.SIGINT, ".csv")],
                         ids=["SIGTERM jsonl", "SIGTERM npz", "SIGHUP jsonl", "SIGINT csv"])
def test_a_signal_ends_listen_with_its_recording_complete(posecast, tmp_path: Path, sig: int, suffix: str) -> None:
    # Every signal that asks a program to stop ends `listen` the way Ctrl-C does: the recording is
    # written and closed (an .npz only exists once it is), one note says so, exit 128 + signal.
    track = tmp_path / "cam.jsonl"
    meta, poses = write_sample_track(track, frames=120, fps=20.0)      # 6 s: the signal comes long before the end
    port = free_port()
    rec = tmp_path / f"rec{suffix}"
    listener = posecast.start(["listen", "--connect", endpoint(port), "--record", rec, "--timeout", 30,
                               "--no-skeleton"])
    time.sleep(1.5)                        # subscribed before the replay starts (ZeroMQ retries the connect)
    with Collector(port) as c:
        player = posecast.start(["replay", track, "--port", port])
        got = c.wait_poses(15, timeout=30)
        assert len(got) >= 10, "the replay did not get going"
        listener.send_signal(sig)
        rl = posecast.finish(listener, timeout=30)
    player.send_signal(signal.SIGINT)
    rp = posecast.finish(player, timeout=30)
    assert rp.returncode in (0, 130), rp.stderr

    assert rl.returncode == 128 + sig, rl.stderr
    assert "Traceback" not in rl.stderr
    note = rl.stderr.strip().splitlines()
    assert len(note) == 1 and note[0].startswith(f"posecast: interrupted ({signal.Signals(sig).name}); recorded "), rl.stderr
    n = int(re.search(r"recorded (\d+) pose messages", note[0]).group(1))
    assert 1 <= n < len(poses)
    assert f"{n} msgs" in rl.stdout.splitlines()[-1]
    meta = {**meta, "replay": True}          # what was recorded is a replay's stream
    if suffix == ".jsonl":
        rmeta, rposes = read_track(rec)
        assert rmeta == meta
        first = rposes[0]["seq"]
        assert [without_publish(p) for p in rposes] == poses[first:first + n]
    elif suffix == ".npz":
        with np.load(rec) as z:
            assert json.loads(str(z["meta_json"])) == meta
            first = int(z["seq"][0])
            assert z["seq"].tolist() == list(range(first, first + n))
            expect = np.array([p["people"][0]["joints_3d"] for p in poses[first:first + n]], dtype=np.float32)
            assert np.array_equal(z["joints_3d"], expect)
    else:
        rows = rec.read_text().splitlines()
        assert len(rows) == 1 + n and json.loads(rec.with_suffix(".meta.json").read_text()) == meta


class Stranger:
    """A PUB socket in a thread of the test process that keeps sending what a subscriber can meet
    on a port that is not (only) a Posecast stream, and, with `posecast=True`, a valid meta and
    pose message in every round too."""

    def __init__(self, port: int, posecast: bool) -> None:
        self.port, self.posecast = port, posecast
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Stranger":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    @staticmethod
    def strangers(i: int) -> list[list[bytes]]:
        import msgpack

        no_joints = sample_meta()
        del no_joints["joint_names"]
        misshapen = sample_pose(i)
        misshapen["people"][0]["joints_3d"] = [[1.0, 2.0]] * 17
        not_finite = sample_pose(i)
        not_finite["t_capture"] = float("nan")
        newer = sample_pose(i)
        newer["schema"] = 99
        return [[b"pose.cam"],                                         # one part
                [b"pose.cam", b"\xc1 not msgpack"],                     # msgpack: FormatError
                [b"pose.cam", b"{not json"],
                [b"pose.cam", encode({"hello": "world"}, "msgpack")],
                [b"meta.cam", encode(no_joints, "msgpack")],            # KeyError, before
                [b"pose.cam", encode(misshapen, "msgpack")],
                [b"pose.cam", json.dumps(not_finite).encode()],         # NaN: JSON has none
                [b"pose.cam", encode(newer, "msgpack")],
                [b"pose.cam", b"x", b"y"],
                [b"pose.cam", msgpack.packb([1, 2, 3])]]

    def _run(self) -> None:
        ctx = zmq.Context()
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.bind(endpoint(self.port))
        try:
            i = 0
            while not self._stop.is_set():
                for parts in self.strangers(i):
                    pub.send_multipart(parts)
                if self.posecast:
                    pub.send_multipart([b"meta.cam", encode(sample_meta(), "msgpack")])
                    pub.send_multipart([b"pose.cam", encode(sample_pose(i), "msgpack")])
                i += 1
                time.sleep(0.02)
        finally:
            pub.close()
            ctx.term()


def test_listen_to_something_else_is_one_error_line(posecast) -> None:
    port = free_port()
    with Stranger(port, posecast=False):
        r = posecast.run(["listen", "--connect", endpoint(port), "--timeout", 1], timeout=60)
    assert r.returncode == 2, r.stderr
    line = one_error_line(r.stderr)
    assert endpoint(port) in line and "not Posecast messages" in line and "in 1 s" in line
    assert r.stderr.strip().splitlines() == [line]


@pytest.mark.parametrize("suffix", [".jsonl", ".npz"])
def test_listen_skips_and_counts_what_is_not_posecast(posecast, tmp_path: Path, suffix: str) -> None:
    port = free_port()
    rec = tmp_path / f"rec{suffix}"
    with Stranger(port, posecast=True):
        r = posecast.run(["listen", "--connect", endpoint(port), "--record", rec, "--count", 20,
                          "--timeout", 10], timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("posecast: WARNING: skipped "), r.stderr
    assert lines[1] == f"posecast: recorded 20 pose messages to '{rec}' (complete)"
    assert "not Posecast messages" in lines[0]
    skipped = int(re.search(r"skipped (\d+) message", lines[0]).group(1))
    last = r.stdout.splitlines()[-1]
    assert last.startswith("20 msgs") and f"skipped {skipped} (not Posecast)" in last and skipped > 0
    if suffix == ".jsonl":
        meta, poses = read_track(rec)
        assert meta == sample_meta() and len(poses) == 20
        assert [without_publish(p) for p in poses] == [sample_pose(p["seq"], t_capture=p["t_capture"]) for p in poses]
    else:
        with np.load(rec) as z:
            assert len(z["seq"]) == 20 and np.isfinite(z["joints_3d"]).all()


def test_parse_message_says_why_a_message_is_not_posecast() -> None:
    from streamer.protocol_check import NotPosecast, parse_message

    for parts in Stranger.strangers(3):
        with pytest.raises(NotPosecast) as exc:
            parse_message(parts)
        assert str(exc.value) and "\n" not in str(exc.value)
    good = sample_pose(3)
    assert parse_message([b"pose.cam", encode(good, "json")], joints=17) == good
    with pytest.raises(NotPosecast, match="17 joints where the stream's meta names 15"):
        parse_message([b"pose.cam", encode(good, "msgpack")], joints=15)
    assert parse_message([b"meta.cam", encode(sample_meta(), "msgpack")]) == sample_meta()


@pytest.mark.parametrize("change, problem", [
    ({}, None), ({"last_seq": None, "poses": 0}, None),
    ({"reason": "done"}, "'reason' is not one of end_of_input, stopped, failed"),
    ({"poses": -1}, "without a count of 'poses'"), ({"poses": True}, "without a count of 'poses'"),
    ({"last_seq": 2.5}, "'last_seq' is not an integer or null"),
])
def test_an_end_message_is_checked_like_the_others(change: dict[str, Any], problem: str | None) -> None:
    from streamer.protocol import end_message
    from streamer.protocol_check import NotPosecast, parse_message

    msg = {**end_message("cam", "stopped", 3, 2), **change}
    if problem is None:
        assert parse_message([b"end.cam", encode(msg, "json")]) == msg
    else:
        with pytest.raises(NotPosecast, match=re.escape(problem)):
            parse_message([b"end.cam", encode(msg, "json")])


def test_the_publisher_ends_a_started_stream_once(zctx) -> None:
    """Nothing for a stream never started (no subscriber knows of it); once, after the last pose,
    with the count and last seq of the run its last meta announced."""
    pub = Publisher("tcp://127.0.0.1:0")
    try:
        sub = make_sub(zctx, port_of(pub))
        deadline = time.monotonic() + 10
        while pub.subscriptions < 1 and time.monotonic() < deadline:
            pub.tick()
            time.sleep(0.01)
        pub.end("failed")                            # never started: nothing sent
        pub.start("cam", sample_meta("cam"))
        for seq in range(4):
            pub.publish(sample_pose(seq))
        pub.start("cam", sample_meta("cam"))         # a second run (a replay's next pass)
        for seq in range(2):
            pub.publish(sample_pose(seq))
        pub.end("end_of_input")
        pub.end("stopped")                           # once only
        got = []
        while sub.poll(2000):
            topic, payload = sub.recv_multipart()
            got.append((topic, decode(payload)))
            if topic.startswith(b"end."):
                assert not sub.poll(300)             # nothing after it
                break
    finally:
        pub.close(linger_ms=0)
    ends = [m for topic, m in got if topic == b"end.cam"]
    assert len(ends) == 1 and got[-1][1] is ends[0]
    assert {k: ends[0][k] for k in ("reason", "poses", "last_seq")} == {"reason": "end_of_input", "poses": 2,
                                                                       "last_seq": 1}


def test_replay_on_port_0_takes_a_free_one_and_says_which(posecast, tmp_path: Path) -> None:
    track = tmp_path / "t.jsonl"
    write_sample_track(track, frames=3, fps=30.0)
    r = posecast.run(["replay", track, "--port", "0"], timeout=60)
    assert r.returncode == 0, r.stderr
    said = re.search(rf"replaying {re.escape(str(track))} on tcp://127\.0\.0\.1:(\d+)", r.stderr)
    assert said and int(said.group(1)) > 0, r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"posecast: published all 3 pose messages of {track}", r.stderr


def test_listen_stops_at_the_stream_s_end_message(posecast, tmp_path: Path) -> None:
    track = tmp_path / "t.jsonl"
    write_sample_track(track, frames=3, fps=30.0)
    port = free_port()
    # Long enough for the replay to start on a busy machine: silence before any message is an error.
    listener = posecast.start(["listen", "--connect", endpoint(port), "--timeout", 30, "--no-skeleton",
                               "--record", tmp_path / "rec.jsonl"])
    time.sleep(1.5)                        # subscribed before the replay starts (ZeroMQ retries the connect)
    player = posecast.run(["replay", track, "--port", port], timeout=60)
    t_played = time.monotonic()
    rl = posecast.finish(listener, timeout=60)
    assert player.returncode == 0 and rl.returncode == 0, (player.stderr, rl.stderr)
    # Ended by the end message, not by --timeout's 30 s of silence (which would say so on stderr).
    assert time.monotonic() - t_played < 25
    assert "stream 'cam' ended (end_of_input): the publisher sent 3 pose messages; 3 came here, 0 lost" in rl.stdout
    assert rl.stderr.strip().splitlines() == [
        f"posecast: recorded 3 pose messages to '{tmp_path / 'rec.jsonl'}' (complete)"], rl.stderr


def test_listen_counts_the_poses_lost_after_the_last_that_came(tmp_path: Path, capsys) -> None:
    """No gap in `seq` shows a loss at the end: the end message's last_seq does."""
    from streamer.listen import EXIT_RECORDING_INCOMPLETE, listen

    port, rec, out = free_port(), tmp_path / "rec.jsonl", io.StringIO()
    with _publishing_once_subscribed(port, [0, 1, 2], 0.01, ends_after=5):
        rc = listen(endpoint(port), "pose.", rec, None, 20.0, False, out=out)
    assert rc == EXIT_RECORDING_INCOMPLETE
    assert "stream 'cam' ended (end_of_input): the publisher sent 6 pose messages; 3 came here, 3 lost" in out.getvalue()
    said = capsys.readouterr().err.strip().splitlines()
    assert said == [f"posecast: error: recorded 3 pose messages to '{rec}', but 3 were lost on the way (gaps in "
                    f"`seq`, or sent after the last one that came, as the publisher's end message says: this "
                    f"subscriber read too slowly, or the publisher sent faster than its queue of `publish.hwm` "
                    f"messages holds) (exit code 3)"], said


def test_listen_keep_listening_goes_on_after_the_end_message(capsys) -> None:
    from streamer.listen import listen

    port, out = free_port(), io.StringIO()
    t0 = time.monotonic()
    with _publishing_once_subscribed(port, [0, 1, 2], 0.01, ends_after=2):
        assert listen(endpoint(port), "pose.", None, None, 1.0, False, out=out, through_ends=True) == 0
    assert "3 came here, 0 lost" in out.getvalue()
    assert time.monotonic() - t0 > 1.0           # on until --timeout's silence
    assert capsys.readouterr().err == ""         # silence after an end message is no news


def test_listen_says_why_it_stopped_when_the_stream_goes_quiet(tmp_path: Path, capsys) -> None:
    """A publisher that stalls, or is killed, sends no end message: the recording is complete as
    far as it went, and the line says that what came after is not known."""
    from streamer.listen import listen

    port, rec = free_port(), tmp_path / "rec.jsonl"
    with _publishing_once_subscribed(port, [0, 1, 2], 0.01):
        assert listen(endpoint(port), "pose.", rec, None, 1.0, False, out=io.StringIO()) == 0
    assert capsys.readouterr().err.strip().splitlines() == [
        f"posecast: the stream went quiet: nothing from '{endpoint(port)}' for 1 s after 3 pose messages, and no "
        f"end message (the publisher stalled or was killed; --timeout waits longer)",
        f"posecast: recorded 3 pose messages to '{rec}', complete up to the last one that came; any the publisher "
        f"sent after it are not known (it sent no end message)"]


class _DiskFillsAfter:
    """A track file whose disk takes `writes` more writes, then fails as a full one does."""

    def __init__(self, real: Any, writes: int) -> None:
        self.real, self.writes = real, writes

    def write(self, data: Any) -> int:
        if self.writes <= 0:
            raise OSError(28, "No space left on device")
        self.writes -= 1
        return self.real.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".npz"])
def test_a_recording_the_disk_cannot_take_says_how_many_poses_it_holds(tmp_path: Path, suffix: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """As the normal end says "recorded N pose messages": a text track keeps the whole lines
    before the write that failed; an .npz, written at the end, keeps none."""
    import streamer.tracks as tracks
    from engines.errors import InputError
    from streamer.listen import listen

    real_open = tracks._open_to_stream
    monkeypatch.setattr(tracks, "_open_to_stream", lambda *a, **k: _DiskFillsAfter(real_open(*a, **k), 1 + 4))

    def full(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    port, rec = free_port(), tmp_path / f"rec{suffix}"
    with _publishing_once_subscribed(port, list(range(8)), 0.01), pytest.raises(InputError) as err:
        listen(endpoint(port), "pose.", rec, 8, 20.0, False, out=io.StringIO())
    said = f"cannot write track file '{rec}': No space left on device (free some disk space); "
    if suffix == ".npz":
        assert str(err.value) == said + "the 8 pose messages that came are not recorded (a .npz is written whole, at the end)"
        assert not rec.exists()
        return
    assert str(err.value) == said + f"'{rec}' holds the 4 pose messages recorded before it, each whole"
    if suffix == ".jsonl":
        assert [p["seq"] for p in read_track(rec)[1]] == [0, 1, 2, 3]
    else:
        assert len(rec.read_text().splitlines()) == 1 + 4           # the header, a row a pose (one person each)


@pytest.mark.parametrize("args, mention", [
    (["replay", "T", "--port", "99999"], "--port"),
    (["replay", "T", "--port", "-5"], "--port"),
    (["listen", "--connect", "tcp://127.0.0.1:99999"], "--connect"),
    (["listen", "--connect", "tcp://127.0.0.1:0"], "--connect"),
    (["replay", "T", "--speed", "1e-300"], "--speed"),
    (["replay", "T", "--speed", "nan"], "--speed"),
    (["replay", "T", "--speed", "inf"], "--speed"),
    (["replay", "T", "--speed", "0"], "--speed"),
    (["replay", "T", "--speed", "5000"], "--speed"),
    (["listen", "--count", "-5"], "--count"),
    (["listen", "--count", "0"], "--count"),
    (["listen", "--timeout", "-1"], "--timeout"),
    (["listen", "--timeout", "0"], "--timeout"),
    (["listen", "--timeout", "nan"], "--timeout"),
    (["listen", "--timeout", "inf"], "--timeout"),
], ids=["replay port above", "replay port negative", "listen port above", "listen port 0",
        "speed tiny", "speed nan", "speed inf", "speed 0", "speed huge", "count negative", "count 0",
        "timeout negative", "timeout 0", "timeout nan", "timeout inf"])
def test_bad_listen_and_replay_arguments_are_one_line(posecast, tmp_path: Path, args: list[str], mention: str) -> None:
    track = tmp_path / "t.jsonl"
    write_sample_track(track, frames=3, fps=30.0)
    args = [str(track) if a == "T" else a for a in args]
    r = posecast.run(args, timeout=60)
    assert r.returncode == 2, r.stderr
    line = one_error_line(r.stderr)
    assert mention in line
    assert r.stderr.strip().splitlines() == [line]      # refused before anything was published
    assert r.stdout == ""


def test_listen_under_nohup_outlives_a_hangup(posecast) -> None:
    # A SIGHUP that was ignored when `listen` started (nohup) stays ignored: it runs on.
    port = free_port()
    proc = posecast.start(["listen", "--connect", endpoint(port), "--timeout", 2],
                          preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    time.sleep(1.0)
    proc.send_signal(signal.SIGHUP)
    r = posecast.finish(proc, timeout=60)
    assert r.returncode == 2, r.stderr                  # it ran to its --timeout
    assert "no pose messages" in one_error_line(r.stderr)


# --- replay refuses a malformed track; ends on a signal; listen records one stream only ---------

def _bad_pose(kind: str) -> dict[str, Any]:
    if kind == "no t_capture":
        return {"type": "pose", "seq": 0}
    pose = sample_pose(0, t_capture=1_700_000_000.0)
    pose.update({"t_capture": "x"} if kind == "t_capture text" else {"t_media": "abc"})
    return pose


@pytest.mark.parametrize("kind", ["no t_capture", "t_capture text", "t_media text"])
def test_replay_names_the_malformed_line_before_publishing(tmp_path: Path, capsys, kind: str) -> None:
    # Line 5 (a blank line counts, as read_track counts it): KeyError or TypeError with a traceback
    # before, or published as it was. Now one line, exit 2, and nothing published: the check comes
    # before the port is even bound, so a port in use goes unmentioned.
    from streamer.cli import main

    track = tmp_path / "t.jsonl"
    good = [sample_pose(i, t_capture=1_700_000_000.0 + i / 30) for i in range(2)]
    lines = [json.dumps(m) for m in [sample_meta(), *good]] + ["", json.dumps(_bad_pose(kind))]
    track.write_text("\n".join(lines) + "\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        rc = main(["replay", str(track), "--port", str(s.getsockname()[1])])
    err = capsys.readouterr().err
    assert rc == 2, err
    line = one_error_line(err)
    assert f"track file '{track}', line 5: a pose message " in line and "already in use" not in line
    assert err.strip().splitlines() == [line]          # no "replaying ..." before it


def test_replay_leaves_out_a_last_line_cut_off_mid_write_with_a_warning(tmp_path: Path, capsys) -> None:
    # A recording stopped by a crash or a full disk mid-line was refused whole; now its whole
    # frames are replayed, after one warning line.
    from streamer.cli import main

    track = tmp_path / "t.jsonl"
    write_sample_track(track, frames=3, fps=30.0)
    track.write_text(track.read_text() + json.dumps(sample_pose(3))[:50])
    assert main(["replay", str(track), "--port", "0", "--speed", "100"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == (f"posecast: warning: track file '{track}', line 5: cut off mid-write (the recording stopped "
                        f"there); it is left out, and the 3 pose messages before it are read")
    assert lines[1].startswith("posecast: replaying ") and lines[2:] == [f"posecast: published all 3 pose messages "
                                                                         f"of {track}"], lines


def _replay_loop_until(posecast, track: Path, wait: Callable[[Collector, subprocess.Popen], None]):
    """`posecast replay TRACK --loop` with a collecting subscriber, stopped by SIGTERM once `wait`
    returns; (its result, what the subscriber collected)."""
    port = free_port()
    with Collector(port) as c:
        player = posecast.start(["replay", track, "--port", port, "--loop"])
        wait(c, player)
        player.send_signal(signal.SIGTERM)
        r = posecast.finish(player, timeout=30)
        return r, list(c.items)


def test_replay_loop_publishes_the_recording_again_each_pass_announced_by_its_meta(posecast, tmp_path: Path) -> None:
    track = tmp_path / "cam.jsonl"
    write_sample_track(track, frames=4, fps=20.0)

    def fourteen_poses(c: Collector, player: subprocess.Popen) -> None:
        deadline = time.monotonic() + 30
        while len(c.poses) < 14 and time.monotonic() < deadline and player.poll() is None:
            time.sleep(0.05)

    r, items = _replay_loop_until(posecast, track, fourteen_poses)
    assert r.returncode == 143, r.stderr
    seqs = [m["seq"] for _, t, _, m in items if t.startswith(b"pose.")]
    assert len(seqs) >= 14 and seqs[:12] == [0, 1, 2, 3] * 3, seqs
    # Each pass after the first is announced by its meta, just before its first pose.
    # A replay stopped by a signal ends its stream with an end message saying so, last.
    assert items[-1][1] == b"end.cam" and items[-1][3]["reason"] == "stopped", items[-1]
    assert items[-1][3]["last_seq"] == seqs[-1], (items[-1], seqs)
    kinds = ["meta" if t.startswith(b"meta.") else m["seq"] for _, t, _, m in items[:-1]]
    for k, kind in enumerate(kinds):
        if kind == 0 and k > kinds.index(0):
            assert kinds[k - 1] == "meta", kinds
    # Paced as recorded (20 a second) through the passes' turns, not sent in a burst.
    times = [t for t, topic, _, _ in items if topic.startswith(b"pose.")]
    assert times[11] - times[0] >= 0.5 * 11 / 20.0, times[:12]
    last = r.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"posecast: interrupted \(SIGTERM\) after publishing \d+ \(the recording's 4, looped\) "
                        r"pose messages", last), r.stderr


def test_replay_loop_of_a_single_pose_sends_it_once_a_second_not_as_fast_as_it_can(posecast, tmp_path: Path) -> None:
    track = tmp_path / "one.jsonl"
    write_sample_track(track, frames=1, fps=20.0)
    started: list[float] = []

    def first_pose_then_2_5_s(c: Collector, _player: subprocess.Popen) -> None:
        assert len(c.wait_poses(1, timeout=30)) >= 1, "the replay did not get going"
        started.append(time.monotonic())
        time.sleep(2.5)

    r, items = _replay_loop_until(posecast, track, first_pose_then_2_5_s)
    elapsed = time.monotonic() - started[0]
    poses = sum(1 for _, topic, _, _ in items if topic.startswith(b"pose."))
    assert r.returncode == 143, r.stderr
    # It flooded: 30,000 poses in 2 s, each after a meta.
    assert 2 <= poses <= elapsed + 2, (poses, elapsed)


def test_sigterm_ends_replay_with_one_line(posecast, tmp_path: Path) -> None:
    # replay had no handler: SIGTERM killed it silently (-15). Now it stops as listen does.
    track = tmp_path / "cam.jsonl"
    write_sample_track(track, frames=200, fps=20.0)        # 10 s: the signal comes long before the end
    port = free_port()
    with Collector(port) as c:
        player = posecast.start(["replay", track, "--port", port])
        assert len(c.wait_poses(5, timeout=30)) >= 1, "the replay did not get going"
        player.send_signal(signal.SIGTERM)
        r = posecast.finish(player, timeout=30)
    assert r.returncode == 143, r.stderr
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"posecast: interrupted \(SIGTERM\) after publishing \d+ of 200 pose messages", last), r.stderr


class Restarter:
    """A publisher on `port` that runs twice, as one restarted on the same address: each run binds,
    waits for the subscriber, sends its meta and then poses numbered from 0 (raw XPUB sockets,
    so that nothing is sent before the subscriber is there). `early`: the second run's first
    pose comes before its meta, as ZeroMQ may deliver them when a subscription arrives between
    the two."""

    def __init__(self, port: int, metas: list[dict[str, Any]], poses: int, early: bool = False) -> None:
        self.port, self.metas, self.poses, self.early = port, metas, poses, early
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Restarter":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(30)

    def _run(self) -> None:
        ctx = zmq.Context()
        try:
            for run, meta in enumerate(self.metas):
                xpub = ctx.socket(zmq.XPUB)
                xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
                deadline = time.monotonic() + 20
                while True:
                    # The first run's socket lets go of the port asynchronously after its close.
                    try:
                        xpub.bind(endpoint(self.port))
                        break
                    except zmq.ZMQError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
                wanted = {b"\x01meta.", b"\x01pose."}
                while wanted and time.monotonic() < deadline:
                    if xpub.poll(100):
                        wanted.discard(xpub.recv())
                messages = [(b"meta.cam", meta), *((b"pose.cam", sample_pose(i)) for i in range(self.poses))]
                if self.early and run > 0:
                    messages[:2] = messages[1::-1]
                for topic, msg in messages:
                    xpub.send_multipart([topic, encode(msg, "msgpack")])
                    time.sleep(0.01)
                xpub.close(linger=2000)
        finally:
            ctx.term()


@pytest.mark.parametrize("early", [False, True], ids=["meta first", "pose first"])
def test_listen_stops_recording_when_the_stream_changes(tmp_path: Path, early: bool) -> None:
    # A publisher restarted with another source and axes: its poses were appended under the first
    # meta. Now the recording stops there, complete, and the one error line says why.
    from streamer.listen import listen

    first = sample_meta("cam")
    other = {**sample_meta("cam"), "source": "walk", "axes": {**first["axes"], "frame": "unity"}}
    port, rec = free_port(), tmp_path / "rec.jsonl"
    with Restarter(port, [first, other], poses=10, early=early):
        with pytest.raises(PosecastError) as exc:
            listen(endpoint(port), "pose.", rec, None, 20.0, False, out=open(os.devnull, "w"))
    message = str(exc.value)
    assert exc.value.exit_code == 2 and "\n" not in message
    assert "changed its stream" in message and "source \"cam\" -> \"walk\"" in message
    assert "axes \"camera\" -> \"unity\"" in message and f"'{rec}' holds the 10 pose messages" in message
    meta, poses = read_track(rec)
    assert meta == first and [p["seq"] for p in poses] == list(range(10))


@pytest.mark.parametrize("early", [False, True], ids=["meta first", "pose first"])
def test_listen_records_on_through_a_restart_of_the_same_stream(tmp_path: Path, early: bool) -> None:
    # The same meta again (re-sent, or the same source restarted) is the same stream: no stop,
    # and the restarted run's poses (seq from 0 again) are recorded after the first run's.
    from streamer.listen import listen

    port, rec = free_port(), tmp_path / "rec.jsonl"
    with Restarter(port, [sample_meta("cam"), sample_meta("cam")], poses=10, early=early):
        rc = listen(endpoint(port), "pose.", rec, 20, 20.0, False, out=open(os.devnull, "w"))
    assert rc == 0
    meta, poses = read_track(rec)
    assert meta == sample_meta("cam") and [p["seq"] for p in poses] == [*range(10), *range(10)]


def test_meta_change_ignores_clock_fields_and_names_what_changed() -> None:
    from streamer.listen import meta_change

    meta = sample_meta("cam")
    assert meta_change(meta, json.loads(json.dumps(meta))) is None
    assert meta_change(meta, {**meta, "t_publish": 5.0}) is None
    assert meta_change(meta, {**meta, "image_size": [640, 480]}) == "image_size [320, 240] -> [640, 480]"
    assert meta_change(meta, {**meta, "joint_names": ["a"] * 17}) == "joint_names"


@contextlib.contextmanager
def publishing(source: str, every_s: float, poses: bool = True) -> Iterator[str]:
    """A Publisher on a free port, in a thread: a pose every `every_s` (or, without `poses`,
    only its meta, on subscription and every 2 s, as a quiet stream's). Yields its endpoint."""
    port = free_port()
    publisher = Publisher(endpoint(port))
    stop = threading.Event()

    def publish() -> None:
        publisher.start(source, sample_meta(source))
        seq = 0
        while not stop.wait(every_s):
            if poses:
                publisher.publish(sample_pose(seq))
                seq += 1
            else:
                publisher.tick()

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        yield endpoint(port)
    finally:
        stop.set()
        thread.join(10)
        publisher.close(linger_ms=0)


@pytest.mark.parametrize("wanted, says", [
    ("pose.nosuchcam", " on topic 'pose.nosuchcam': the stream there is 'walk', whose poses come on topic 'pose.walk' "
                       "(give --topic pose.walk, or leave --topic out)"),
    ("pose.walk", ", though its stream 'walk' announced itself (is its source giving frames?)"),
])
def test_listen_that_hears_a_stream_but_no_pose_says_why(wanted: str, says: str) -> None:
    """The meta came (it is always subscribed to), so a publisher is there: the line names the
    topic it publishes on, or its silence, not 'is posecast run publishing there?'."""
    from streamer.listen import listen

    with publishing("walk", 0.05, poses=wanted == "pose.nosuchcam") as url:  # the other: a stream with no pose
        with pytest.raises(PosecastError) as exc:
            listen(url, wanted, None, None, 1.5, False, out=open(os.devnull, "w"))
    assert str(exc.value) == f"no pose messages from '{url}' in 1.5 s" + says


def test_replay_of_a_track_without_poses_says_so(tmp_path: Path) -> None:
    from streamer.replay import replay

    track = tmp_path / "t.jsonl"
    write_sample_track(track, frames=0, fps=30.0)
    with pytest.raises(PosecastError) as exc:
        replay(track, endpoint(free_port()), "msgpack", 1.0, 64, 2.0, announce=lambda line: None)
    assert exc.value.exit_code == 2
    assert str(exc.value) == f"track file '{track}' holds no pose messages, only its meta line: nothing to replay"


def test_listen_recording_into_a_pipe_waits_for_its_reader_without_timing_out(tmp_path: Path) -> None:
    """The wait for a named pipe's reader is not silence on the stream: a reader that comes after
    --timeout still gets every pose."""
    from streamer.listen import listen

    fifo, got = tmp_path / "rec.jsonl", []
    os.mkfifo(fifo)

    def read_late() -> None:
        time.sleep(2.0)                                  # longer than listen's --timeout of 1 s
        with open(fifo, "rb") as f:
            got.extend(f)

    reader = threading.Thread(target=read_late, daemon=True)
    reader.start()
    with publishing("cam", 0.02) as url:
        rc = listen(url, "pose.", fifo, 30, 1.0, False, out=open(os.devnull, "w"))
    reader.join(10)
    assert rc == 0 and len(got) == 1 + 30 and json.loads(got[0])["type"] == "meta"


@pytest.mark.skipif(not os.path.exists("/proc/self"), reason="needs Linux's pipe size (F_GETPIPE_SZ)")
def test_a_stop_ends_a_recording_that_waits_for_a_pipes_reader(tmp_path: Path) -> None:
    """`listen --record - | stalled`: the write waits for the reader, and a SIGTERM only noted left
    it waiting for ever (Python resumes the write after such a handler). It ends the command, 143,
    with its one line saying what the pipe got."""
    import signal
    import subprocess
    import sys

    from test_convert import _pipe_full

    with publishing("cam", 0.005) as url:
        proc = subprocess.Popen([sys.executable, "-m", "streamer.cli", "listen", "--connect", url, "--record", "-"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        try:
            _pipe_full(proc.stdout.fileno(), proc)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail("listen went on waiting for the pipe's reader after SIGTERM")
            err = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r"posecast: interrupted \(SIGTERM\); recorded \d+ pose messages to standard output; its "
                        r"reader had stopped reading, so the write of the next was cut off and its last line may be "
                        r"part of one", last), err


def test_an_interrupted_listen_that_recorded_nothing_says_so(tmp_path: Path) -> None:
    from streamer.listen import StreamStats, _interrupted
    from streamer.tracks import open_track_writer

    rec = tmp_path / "rec.jsonl"
    rec.write_text("an earlier recording\n")
    writer = open_track_writer(rec, sample_meta("cam"))
    writer.close()
    assert _interrupted("SIGINT", rec, writer, StreamStats(), "tcp://127.0.0.1:1", []) == (
        f"interrupted (SIGINT); nothing recorded to '{rec}': no pose message was written (a file already there "
        f"was left as it was)")
    assert rec.read_text() == "an earlier recording\n"


def test_a_quiet_publisher_still_answers_and_repeats_its_meta() -> None:
    """No pose flows (a stream reconnecting, a pause in a replay): a subscriber that comes now
    still gets the meta, and the meta still goes out every meta_interval_s."""
    port = free_port()
    publisher = Publisher(endpoint(port), meta_interval_s=0.3)
    publisher.start("cam", sample_meta("cam"))
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"meta.")
    sub.connect(endpoint(port))
    metas = 0
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            publisher.tick()
            while sub.poll(0):
                topic, _ = sub.recv_multipart()
                metas += topic == b"meta.cam"
            time.sleep(0.02)
    finally:
        sub.close(linger=0)
        ctx.term()
        publisher.close(linger_ms=0)
    assert metas >= 4            # one for the subscription, then one every 0.3 s
