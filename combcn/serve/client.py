"""A small Python client of ``combcn serve`` (the plugin's C++ client does the same; docs/OFX.md).

Used by ``combcn serve --ping/--stop`` and the tests.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import random
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

from combcn.errors import BackendError
from combcn.serve import protocol
from combcn.serve.protocol import WindowIds, WindowLayout

# Seconds a refused connection (socket present, not yet or no longer listening) is retried.
REFUSED_GRACE = 1.0


class ServeClient:
    """Talks to the server on ``socket_path``; each call opens its own connection.

    Args:
        socket_path: the server's Unix socket.
        timeout: seconds to wait for connecting (a busy server's full connect queue included) and
            for each reply.
    """

    def __init__(self, socket_path: str | Path, timeout: float = 600.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout

    def request(self, message: dict[str, Any], fd: int | None = None) -> dict[str, Any]:
        """Send one request (with an optional descriptor) and return the reply object.

        Raises:
            BackendError: no server listens, or it closed the connection without answering.
        """
        message = {"v": protocol.PROTOCOL_VERSION, **message}
        with self._connect() as sock:
            data = protocol.encode(message)
            if fd is None:
                sock.sendall(data)
            else:
                sent = sock.sendmsg(
                    [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, np.array([fd], np.int32).tobytes())]
                )
                sock.sendall(data[sent:])
            header = self._recv(sock, protocol.HEADER.size)
            body = self._recv(sock, protocol.parse_header(header))
            return protocol.decode_body(body)

    def _connect(self) -> socket.socket:
        """A connected socket; waits out a full connect queue (and a server still starting) with backoff.

        A Unix socket with a full listen queue refuses a non-blocking connect at once with EAGAIN
        (Python's socket timeouts make connect non-blocking), where a blocking one would wait; so
        EAGAIN is retried until ``timeout``. ECONNREFUSED (socket file present, nobody listening:
        a server between bind and listen, or a dead one) is retried for at most
        :data:`REFUSED_GRACE` seconds, so a stale socket still fails fast.
        """
        start = time.monotonic()
        delay = 0.005
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.socket_path))
                return sock
            except OSError as exc:
                sock.close()
                waited = time.monotonic() - start
                busy = exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
                starting = exc.errno == errno.ECONNREFUSED and waited < min(REFUSED_GRACE, self.timeout)
                if not (busy or starting) or waited + delay > self.timeout:
                    why = exc.strerror or str(exc)
                    if busy:
                        why += f" (its connect queue stayed full for {waited:.1f}s)"
                    raise BackendError(f"no combcn server answers on {self.socket_path}: {why}") from exc
            time.sleep(delay * (0.5 + random.random()))  # jitter: clients that collided do not retry in step
            delay = min(delay * 2, 0.25)

    @staticmethod
    def _recv(sock: socket.socket, n: int) -> bytes:
        chunks = []
        while n > 0:
            data = sock.recv(n)
            if not data:
                raise BackendError("the combcn server closed the connection before answering")
            chunks.append(data)
            n -= len(data)
        return b"".join(chunks)

    def ping(self) -> dict[str, Any]:
        return self.request({"op": "ping"})

    def shutdown(self) -> dict[str, Any]:
        return self.request({"op": "shutdown"})

    def inpaint(
        self,
        frames: np.ndarray,
        matte: np.ndarray,
        want: list[int] | None = None,
        *,
        ids: WindowIds | None = None,
        references: dict[int, np.ndarray] | None = None,
        **params: Any,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Inpaint one window through the server, the way the plugin does.

        Args:
            frames: float32 [T, H, W, C], C = 3 or 4, top-down rows.
            matte: float32 [T, H, W], 1 = remove.
            want: window indices to return (default: all).
            ids: slot and frame ids (frame number -> id, in window order) for later lookups.
            references: window index -> that frame with its hole filled by hand, [H, W, C >= 3]
                (its RGB is sent).
            **params: expand, feather, shaper, device, weights, track, reference_wins.

        Returns:
            (float32 [K, H, W, C] for the wanted frames, the reply object).
        """
        extra: dict[str, Any] = {}
        if ids is not None:
            extra = {"slot": ids.slot, "times": list(ids.ids), "frame_ids": list(ids.ids.values())}
        return self._window("inpaint", frames, matte, want, {**extra, "params": params}, references or {})

    def lookup(
        self, frame: np.ndarray, matte: np.ndarray, *, slot: str, time: int, frame_id: str
    ) -> tuple[np.ndarray | None, dict[str, Any]]:
        """Ask for one frame of a window the server computed earlier for ``slot``, as the plugin does.

        Args:
            frame: float32 [H, W, C], the frame as it would be sent (its alpha comes back).
            matte: float32 [H, W].
            slot, time, frame_id: see :class:`protocol.WindowIds`.

        Returns:
            (float32 [H, W, C] on a hit, else None; the reply object).
        """
        out, reply = self._window(
            "lookup", frame[None], matte[None], [0], {"slot": slot, "time": time, "frame_id": frame_id}
        )
        return (out[0] if reply.get("hit") else None), reply

    def _window(
        self,
        op: str,
        frames: np.ndarray,
        matte: np.ndarray,
        want: list[int] | None,
        fields: dict[str, Any],
        references: dict[int, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        T, H, W, C = frames.shape
        want = list(range(T)) if want is None else want
        references = references or {}
        layout = WindowLayout(T, H, W, C, tuple(want), tuple(references))
        if references:
            fields = {**fields, "references": list(references)}
        fd = os.memfd_create("combcn-window", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, layout.total_bytes)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
            with mmap.mmap(fd, layout.total_bytes) as mm:
                mm.write(np.ascontiguousarray(frames, np.float32).tobytes())
                mm.write(np.ascontiguousarray(matte, np.float32).tobytes())
                for rgb in references.values():
                    mm.write(np.ascontiguousarray(np.asarray(rgb)[..., :3], np.float32).tobytes())
                reply = self.request(
                    {
                        "op": op,
                        "frames": T,
                        "height": H,
                        "width": W,
                        "channels": C,
                        "want": want,
                        "out_offset": layout.out_offset,
                        **fields,
                    },
                    fd,
                )
                mm.seek(layout.out_offset)
                out = np.frombuffer(mm.read(layout.total_bytes - layout.out_offset), np.float32)
            return out.reshape(len(want), H, W, C).copy(), reply
        finally:
            os.close(fd)
