"""Stage-to-stage channels: ZeroMQ PUSH/PULL over ipc:// sockets, one per edge.

The receiving stage binds, the sending stage connects, so start-up order does not matter. Receives
poll with a timeout so a stage notices the run being aborted even when its upstream died.
"""

from __future__ import annotations

from typing import Any

import zmq

from streamer.packets import pack, unpack

# Long enough for the final END packet to be delivered, short enough that a stage whose
# downstream died does not hang in close().
LINGER_MS = 2000


class Inbox:
    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        self.sock = ctx.socket(zmq.PULL)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)

    def recv(self, timeout_ms: int | None) -> tuple[str, dict[str, Any]] | None:
        """The next message, or None if none arrived within `timeout_ms` (0: do not wait)."""
        if timeout_ms is not None and not self.poller.poll(timeout_ms):
            return None
        return unpack(self.sock.recv())

    def close(self) -> None:
        self.sock.close()


class Outbox:
    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        self.sock = ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.LINGER, LINGER_MS)
        self.sock.connect(endpoint)

    def send(self, kind: str, body: dict[str, Any]) -> None:
        self.sock.send(pack(kind, body))

    def close(self, linger_ms: int | None = None) -> None:
        if linger_ms is not None:
            self.sock.setsockopt(zmq.LINGER, linger_ms)
        self.sock.close()
