"""Publishing the pose stream over ZeroMQ.

An XPUB socket (a PUB that also sees subscriptions) sends `[topic, payload]` messages:
`pose.<source>` for every frame and `meta.<source>` for the stream's description. The payload is
the protocol's map (streamer/protocol.py), msgpack- or JSON-encoded.

- **Never blocks**: each subscriber has a queue of `hwm` messages (plus what the kernel's socket
  buffers hold); when a slow or dead subscriber's queue is full, ZeroMQ drops the messages that
  do not fit, which are the newest ones, for that subscriber only, until it reads again. The
  pipeline's pace never depends on a subscriber. A client that falls behind therefore reads
  stale messages first: it should drain what is waiting and keep the last (docs/protocol.md).
- **meta on request**: meta is sent at start, whenever a subscription arrives (a new client, or
  one that resubscribes to ask again), and every `meta_interval_s`.
- **A subscription is a topic prefix, no longer than `MAX_SUBSCRIPTION_BYTES`**: ZeroMQ keeps each
  one in a tree of about a hundred bytes per byte of prefix, so a subscriber that sent one of
  megabytes would take gigabytes of the publisher's memory; one that tries is disconnected.
- **An end message last** (`end.<source>`): why the stream ended and how many poses it sent, so
  a subscriber knows the stream is over, and that it has every pose up to the last one, which no
  gap in `seq` can show.
"""

from __future__ import annotations

import errno
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from engines.errors import PosecastError
from streamer.packets import PACK_BUFFER_BYTES
from streamer.protocol import END_TOPIC, META_TOPIC, POSE_TOPIC, end_message, topic


class PortInUseError(PosecastError):
    exit_code = 2


def encode(message: dict[str, Any], encoding: str) -> bytes:
    if encoding == "json":
        return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    return msgpack.packb(message, use_bin_type=True, buf_size=PACK_BUFFER_BYTES)


def decode(payload: bytes) -> dict[str, Any]:
    """Either encoding: JSON payloads start with '{', msgpack maps never do."""
    if payload[:1] == b"{":
        return json.loads(payload)
    return msgpack.unpackb(payload, raw=False)


JOIN_GRACE_S = 0.3      # three of ZeroMQ's reconnect intervals
# The longest message a subscriber may send: its subscriptions (a topic is `pose.` and a source
# name, a file stem or a host, at most 255 bytes) and its handshake. ZeroMQ stores a subscription
# at about 116 bytes per byte of prefix (measured: a 1 MB one took 117 MB, a 300 MB one got the
# publisher killed for lack of memory), so unlimited, one message could take any amount.
MAX_SUBSCRIPTION_BYTES = 4096
# The kernel's send buffer for each subscriber. Left to Linux it grew to 4 MB: about 3,000 old
# pose messages that a subscriber which stalled read before the present, and 4 MB of kernel
# memory pinned for each one stalled. 256 KiB is still 7 s of a 30 fps stream (1.2 kB a pose),
# far above what any link holds in flight at that rate.
SNDBUF_BYTES = 256 * 1024


class Publisher:
    def __init__(self, endpoint: str, encoding: str = "msgpack", hwm: int = 64,
                 meta_interval_s: float = 2.0) -> None:
        self.encoding = encoding
        self.pose_topic = topic(POSE_TOPIC)
        self.meta_topic = topic(META_TOPIC)
        self.end_topic = topic(END_TOPIC)
        self.meta_interval_s = meta_interval_s
        self.source = ""
        self._meta: bytes | None = None
        self._meta_sent = 0.0
        self.sent = 0
        self.run_sent = 0                     # pose messages since the last `start`: the end message's count
        self.last_seq: int | None = None      # of the last pose message since the last `start`
        self.ended = False
        self.subscriptions = 0
        self._prefixes: Counter[bytes] = Counter()    # topic prefixes subscribed to now
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.SNDBUF, SNDBUF_BYTES)     # before bind: each connection takes it then
        self.sock.setsockopt(zmq.LINGER, 0)
        # Applies to what subscribers send (a publisher receives nothing else): a longer message
        # closes that subscriber's connection, the others' go on.
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
        # Every subscription and every unsubscription, repeats included (VERBOSE alone passes an
        # unsubscription only when the topic's last subscriber leaves): `pose_subscribers` counts.
        self.sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        try:
            self.sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(f"cannot publish on {endpoint}: the port is already in use "
                                     f"(another posecast running? choose another with --port)") from None
            if exc.errno in (errno.ENODEV, errno.EADDRNOTAVAIL):
                # ZeroMQ's "No such device" (a name or an IPv6 address) or "Cannot assign requested
                # address" (another machine's): said as what it means here.
                host = endpoint.removeprefix("tcp://").rpartition(":")[0]
                raise PortInUseError(f"cannot publish on {endpoint}: '{host}' is not an IPv4 address or interface "
                                     f"of this machine (check --bind or publish.bind: 127.0.0.1 for this machine "
                                     f"alone, 0.0.0.0 for all its interfaces; IPv6 is not supported)") from None
            raise PortInUseError(f"cannot publish on {endpoint}: {exc} (check --bind or publish.bind, and --port "
                                 f"or publish.port)") from None
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._bound = time.monotonic()

    @property
    def joined_by(self) -> float:
        """The monotonic time by which a subscriber started before the publisher has joined: it
        tries to connect every 100 ms (ZeroMQ's default), and a first message sent sooner is lost
        to it (seen in 4 of 30 runs of a file)."""
        return self._bound + JOIN_GRACE_S

    def let_waiting_subscribers_join(self) -> None:
        """Wait, once, until `joined_by`."""
        left = self.joined_by - time.monotonic()
        if left > 0:
            time.sleep(left)
        self._serve_subscriptions()

    @property
    def pose_subscribers(self) -> int:
        """Subscriptions now that get the pose messages: about the subscribers that read poses
        (one that subscribes to two matching prefixes counts twice). Up to date as of the last
        `publish` or `tick`."""
        return sum(n for prefix, n in self._prefixes.items() if self.pose_topic.startswith(prefix))

    def wait_for_subscribers(self, count: int, stopped: Callable[[], bool]) -> bool:
        """Hold the stream until `count` subscribers read its poses (`pose_subscribers`), giving
        the meta to each as it comes; False if `stopped()` first."""
        while self.pose_subscribers < count:
            if stopped():
                return False
            self.tick()
            time.sleep(0.02)
        return True

    def start(self, source: str, meta: dict[str, Any]) -> None:
        """Name the topics after the source and announce the stream."""
        self.source = source
        self.pose_topic = topic(POSE_TOPIC, source)
        self.meta_topic = topic(META_TOPIC, source)
        self.end_topic = topic(END_TOPIC, source)
        self._meta = encode(meta, self.encoding)
        self.run_sent, self.last_seq = 0, None
        self._send_meta()

    def publish(self, message: dict[str, Any]) -> None:
        """Send one pose message with `t_publish` added (to the copy sent: the caller's message is
        also what the track files record, which have no `t_publish`). Never blocks."""
        self._serve_subscriptions()
        sent = {**message, "t_publish": round(time.time(), 6)}
        self.sock.send_multipart([self.pose_topic, encode(sent, self.encoding)], flags=zmq.NOBLOCK)
        self.sent += 1
        self.run_sent += 1
        self.last_seq = message["seq"]
        self._send_meta_if_due()

    def tick(self) -> None:
        """While no pose is published (a stream reconnecting or stalled, a pause in a replay):
        new subscribers still get the meta, and it still goes out every `meta_interval_s`, so a
        subscriber can tell a quiet publisher from a missing one. Never blocks."""
        self._serve_subscriptions()
        self._send_meta_if_due()

    def _send_meta_if_due(self) -> None:
        if time.monotonic() - self._meta_sent > self.meta_interval_s:
            self._send_meta()

    def _serve_subscriptions(self) -> None:
        asked = False
        while True:
            try:
                event = self.sock.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            if event[:1] == b"\x01":           # subscribe
                self.subscriptions += 1
                self._prefixes[event[1:]] += 1
                asked = True
            elif event[:1] == b"\x00" and self._prefixes[event[1:]] > 0:    # unsubscribe, or a subscriber gone
                self._prefixes[event[1:]] -= 1
        if asked:
            self._send_meta()

    def _send_meta(self) -> None:
        if self._meta is not None:
            self.sock.send_multipart([self.meta_topic, self._meta], flags=zmq.NOBLOCK)
            self._meta_sent = time.monotonic()

    def end(self, reason: str) -> None:
        """Send the end message (`protocol.end_message`) once, after every pose; nothing for a
        stream never started (no meta: no subscriber knows of it). Like a pose, it reaches the
        subscribers that keep up: one far behind (its queues, and the network's buffers, full)
        when the publisher closes misses it, and sees the silence a publisher gone leaves."""
        if self._meta is None or self.ended or self.sock is None:
            return
        self.ended = True
        self._serve_subscriptions()
        message = {**end_message(self.source, reason, self.run_sent, self.last_seq), "t_publish": round(time.time(), 6)}
        self.sock.send_multipart([self.end_topic, encode(message, self.encoding)], flags=zmq.NOBLOCK)

    def close(self, linger_ms: int = 1000) -> None:
        """Stop publishing. Messages still queued get up to `linger_ms` to go out, so a stream's
        last messages reach its subscribers; a stalled subscriber cannot hold this up for longer.
        0 (an aborted run): drop them at once."""
        if self.sock is not None:
            self.sock.close(linger=linger_ms)
            self.sock = None
        self.ctx.term()
