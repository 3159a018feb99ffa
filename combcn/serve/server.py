"""The ``combcn serve`` process: a Unix-socket server that inpaints windows for the OpenFX plugin.

One thread per connection; engine calls and the window cache are serialised by one lock, so when two
render threads ask for the same window the second finds it in the cache. A request that breaks the
protocol gets an error reply (or, for a garbled frame, a closed connection); the server keeps going.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import signal
import socket
import stat
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import combcn
from combcn.errors import CombcnError, ConfigError
from combcn.serve import protocol
from combcn.serve.engine import EngineFactory, FillFn, load_engine
from combcn.serve.paths import ensure_private_dir
from combcn.serve.protocol import FillParams, ProtocolError, WindowIds, WindowLayout

log = logging.getLogger("combcn.serve")


@dataclass
class ServerOptions:
    """How the server runs.

    Attributes:
        socket_path: the Unix socket to listen on (its directory is made private, mode 0700).
        idle_timeout: seconds without requests after which the server exits (0 = never).
        cache_mb: memory budget of the window cache in MiB.
        weights: weights used when a request names none (None = shipped default).
        device: device used when a request says "auto" (None = CUDA if present, else CPU).
        ready_fd: file descriptor to write one byte ``R`` to once listening (used by the plugin).
        max_engines: loaded (weights, device) combinations kept at once.
    """

    socket_path: Path
    idle_timeout: float = 600.0
    cache_mb: int = 1024
    weights: str | None = None
    device: str | None = None
    ready_fd: int | None = None
    max_engines: int = 2


class WindowCache:
    """Least-recently-used cache of inpainted windows under a byte budget.

    Keys are content hashes of (geometry, frames, matte, params); values float32 [T, H, W, 3].
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.used = 0
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, key: str) -> np.ndarray | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: np.ndarray) -> None:
        if value.nbytes > self.budget:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.used -= old.nbytes
        while self._items and self.used + value.nbytes > self.budget:
            _, dropped = self._items.popitem(last=False)
            self.used -= dropped.nbytes
        self._items[key] = value
        self.used += value.nbytes

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class WindowRecord:
    """The last window computed or served for one slot (see :class:`protocol.WindowIds`).

    Attributes:
        key: its cache key (content hash).
        ids: frame number -> id of that frame as sent.
        index: frame number -> its index in the window.
    """

    key: str
    ids: dict[int, str]
    index: dict[int, int]


MAX_RECORDS = 4096  # slots remembered for lookups (a few hundred bytes each)


def window_key(
    layout: WindowLayout,
    frames: np.ndarray,
    matte: np.ndarray,
    params: FillParams,
    references: dict[int, np.ndarray] | None = None,
) -> str:
    """Content hash of one window's inputs and fill options (the cache key)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(struct.pack("<4q", layout.frames, layout.height, layout.width, 3))
    h.update(params.key())
    h.update(np.ascontiguousarray(frames).data)
    h.update(np.ascontiguousarray(matte).data)
    for index, rgb in sorted((references or {}).items()):
        h.update(struct.pack("<q", index))
        h.update(np.ascontiguousarray(rgb).data)
    return h.hexdigest()


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n > 0:
        data = conn.recv(n)
        if not data:
            return None
        chunks.append(data)
        n -= len(data)
    return b"".join(chunks)


class Server:
    """Listens on ``options.socket_path`` and answers ``ping``, ``inpaint``, ``lookup`` and ``shutdown``."""

    def __init__(self, options: ServerOptions, engine_factory: EngineFactory = load_engine) -> None:
        self.options = options
        self.engine_factory = engine_factory
        self.cache = WindowCache(options.cache_mb * 1024 * 1024)
        self.stats = {
            "requests": 0,
            "computed": 0,
            "cached": 0,
            "errors": 0,
            "lookup_hits": 0,
            "lookup_misses": 0,
        }
        self._records: OrderedDict[str, WindowRecord] = OrderedDict()  # slot -> last window, under _lock
        self._engines: OrderedDict[tuple[str | None, str | None], FillFn] = OrderedDict()
        self._lock = threading.Lock()  # engine calls + cache
        self._state = threading.Lock()  # counters below
        self._active = 0
        self._last_activity = time.monotonic()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._lock_file: int | None = None
        self._inode: int | None = None

    # ---- lifetime ---------------------------------------------------------------------------

    def bind(self) -> bool:
        """Take the per-socket lock and listen. False if another server already owns the socket."""
        path = self.options.socket_path
        ensure_private_dir(path.parent)
        self._lock_file = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another combcn server already serves %s; leaving it to that one", path)
            os.close(self._lock_file)
            self._lock_file = None
            return False
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()  # stale: its server died without cleaning up (we hold the lock)
            else:
                raise ConfigError(
                    "exists and is not a socket; remove it or choose another --socket", path=path
                )
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is born 0600
        try:
            sock.bind(str(path))
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen on this socket: {exc.strerror}", path=path) from exc
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        self._inode = path.stat().st_ino
        sock.listen(16)
        sock.settimeout(0.5)
        self._sock = sock
        log.info(
            "combcn %s serving on %s (pid %d, idle time-out %ss)",
            combcn.__version__,
            path,
            os.getpid(),
            self.options.idle_timeout or "none",
        )
        return True

    def _signal_ready(self) -> None:
        fd = self.options.ready_fd
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(fd, b"R")
        with contextlib.suppress(OSError):
            os.close(fd)
        self.options.ready_fd = None

    def serve_forever(self) -> int:
        """Bind (unless done), answer requests until idle, ``shutdown`` or SIGTERM; 0 on a clean exit."""
        if self._sock is None and not self.bind():
            return 0
        assert self._sock is not None
        self._signal_ready()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
            signal.signal(signal.SIGINT, lambda *_: self._stop.set())
        try:
            while not self._stop.is_set():
                try:
                    conn, _ = self._sock.accept()
                except TimeoutError:
                    if self._idle_expired():
                        log.info("idle for %ss: exiting", self.options.idle_timeout)
                        break
                    continue
                with self._state:
                    self._active += 1
                    self._last_activity = time.monotonic()
                threading.Thread(target=self._serve_connection, args=(conn,), daemon=True).start()
        finally:
            self.close()
        return 0

    def _idle_expired(self) -> bool:
        if self.options.idle_timeout <= 0:
            return False
        with self._state:
            return self._active == 0 and time.monotonic() - self._last_activity > self.options.idle_timeout

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            path = self.options.socket_path
            with contextlib.suppress(OSError):
                if path.stat().st_ino == self._inode:  # never remove a successor's socket
                    path.unlink()
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None
        log.info("stopped after %s", self.stats)

    # ---- connections -----------------------------------------------------------------------

    def _serve_connection(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(60.0)  # a peer that stalls mid-message is dropped, not waited on forever
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _, uid, _ = struct.unpack("3i", creds)
            if uid != os.getuid():
                log.warning("refused a connection from uid %d", uid)
                return
            while not self._stop.is_set():
                if not self._serve_one(conn):
                    break
        except OSError as exc:
            log.debug("connection dropped: %s", exc)
        finally:
            conn.close()
            with self._state:
                self._active -= 1
                self._last_activity = time.monotonic()

    def _serve_one(self, conn: socket.socket) -> bool:
        """Read one request and answer it. False when the connection should close."""
        fds: list[int] = []
        try:
            header, fds = self._recv_header(conn)
            if header is None:
                return False
            try:
                length = protocol.parse_header(header)
            except ProtocolError as exc:
                self._reply(conn, {"ok": False, "error": str(exc), "kind": "ProtocolError"})
                return False  # the stream cannot be re-synchronised
            body = _recv_exact(conn, length)
            if body is None:
                return False
            self.stats["requests"] += 1
            try:
                reply = self._dispatch(protocol.decode_body(body), fds)
            except ProtocolError as exc:
                self.stats["errors"] += 1
                log.warning("bad request: %s", exc)
                reply = {"ok": False, "error": f"bad request: {exc}", "kind": "ProtocolError"}
            except CombcnError as exc:
                self.stats["errors"] += 1
                log.error("%s", exc)
                reply = {"ok": False, "error": str(exc), "kind": type(exc).__name__}
            except MemoryError:
                self.stats["errors"] += 1
                log.error("out of memory while inpainting")
                reply = {
                    "ok": False,
                    "error": "the server ran out of memory; use a shorter window",
                    "kind": "MemoryError",
                }
            except Exception as exc:  # noqa: BLE001 - any engine failure must become a reply, not a dead server
                self.stats["errors"] += 1
                log.exception("internal error while answering a request")
                reply = {
                    "ok": False,
                    "error": f"internal error in the engine: {exc!r} (see the server log)",
                    "kind": "InternalError",
                }
            self._reply(conn, reply)
            return not reply.get("shutdown", False)
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _recv_header(self, conn: socket.socket) -> tuple[bytes | None, list[int]]:
        fds: list[int] = []
        data = b""
        while len(data) < protocol.HEADER.size:
            chunk, ancdata, _, _ = conn.recvmsg(protocol.HEADER.size - len(data), socket.CMSG_SPACE(4 * 4))
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    n = len(payload) // 4
                    fds.extend(struct.unpack(f"{n}i", payload[: 4 * n]))
            if not chunk:
                return None, fds
            data += chunk
        return data, fds

    @staticmethod
    def _reply(conn: socket.socket, message: dict[str, Any]) -> None:
        message = {"v": protocol.PROTOCOL_VERSION, **message}
        conn.sendall(protocol.encode(message))

    def _dispatch(self, message: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        op = message.get("op")
        if op == "ping":
            return {
                "ok": True,
                "pid": os.getpid(),
                "version": combcn.__version__,
                "protocol": protocol.PROTOCOL_VERSION,
                "stats": dict(self.stats),
                "cached_windows": len(self.cache),
            }
        if op == "shutdown":
            log.info("shutdown requested")
            self._stop.set()
            return {"ok": True, "shutdown": True}
        if op == "inpaint":
            if len(fds) != 1:
                raise ProtocolError(
                    f"an inpaint request carries exactly one shared-memory descriptor, got {len(fds)}"
                )
            return self._inpaint(message, fds[0])
        if op == "lookup":
            if len(fds) != 1:
                raise ProtocolError(
                    f"a lookup request carries exactly one shared-memory descriptor, got {len(fds)}"
                )
            return self._lookup(message, fds[0])
        raise ProtocolError(f"unknown op {op!r} (expected 'ping', 'inpaint', 'lookup' or 'shutdown')")

    # ---- inpainting ------------------------------------------------------------------------

    def _engine(self, params: FillParams) -> FillFn:
        weights = params.weights or self.options.weights
        device = None if params.device == "auto" else params.device
        device = device or self.options.device
        key = (weights, device)
        engine = self._engines.get(key)
        if engine is None:
            if weights is not None and not Path(weights).is_file():
                raise ConfigError("weights file not found; check the Weights file parameter", path=weights)
            t0 = time.monotonic()
            engine = self.engine_factory(weights, device)
            log.info(
                "loaded engine (weights %s, device %s) in %.1fs",
                weights or "default",
                device or "auto",
                time.monotonic() - t0,
            )
            self._engines[key] = engine
            while len(self._engines) > self.options.max_engines:
                self._engines.popitem(last=False)
        else:
            self._engines.move_to_end(key)
        return engine

    def _inpaint(self, message: dict[str, Any], fd: int) -> dict[str, Any]:
        layout = protocol.layout_from_request(message)
        params = protocol.params_from_request(message)
        ids = protocol.window_ids_from_request(message, layout.frames)
        mm = self._map(fd, layout)
        try:
            return self._inpaint_mapped(layout, params, mm, message, ids)
        finally:
            mm.close()

    def _lookup(self, message: dict[str, Any], fd: int) -> dict[str, Any]:
        """Answer from a window computed earlier for this slot, if it holds this very frame."""
        layout, slot, time_, frame_id = protocol.lookup_from_request(message)
        mm = self._map(fd, layout)
        try:
            H, W, C = layout.height, layout.width, layout.channels
            with self._lock:
                record = self._records.get(slot)
                result = None
                if record is not None and record.ids.get(time_) == frame_id:
                    result = self.cache.get(record.key)
                    self._records.move_to_end(slot)
                if record is None or result is None or result.shape[1:3] != (H, W):
                    self.stats["lookup_misses"] += 1
                    return {"ok": True, "hit": False}
                self.stats["lookup_hits"] += 1
                rgb = np.array(result[record.index[time_]])
                key = record.key
            packed = np.empty((1, H, W, C), dtype=np.float32)
            packed[0, ..., :3] = rgb
            if C == 4:  # alpha is never inpainted: the frame's own, as sent
                sent = np.frombuffer(mm, dtype=np.float32, count=H * W * C).reshape(H, W, C)
                packed[0, ..., 3] = sent[..., 3]
                del sent
            mm.seek(layout.out_offset)
            mm.write(packed.tobytes())
            log.debug("frame %d from the cached window of slot %s", time_, slot)
            return {"ok": True, "hit": True, "key": key}
        finally:
            mm.close()

    def _map(self, fd: int, layout: WindowLayout) -> mmap.mmap:
        """Map a request's shared memory after checking it is a sealed memfd large enough for ``layout``."""
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ProtocolError("the shared-memory descriptor is not a memory file")
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        except OSError:
            seals = 0
        if not seals & fcntl.F_SEAL_SHRINK:
            # A client shrinking the memory while we read it would kill the server with SIGBUS.
            raise ProtocolError("the shared memory must be a memfd sealed with F_SEAL_SHRINK")
        if st.st_size < layout.total_bytes:
            raise ProtocolError(
                f"shared memory holds {st.st_size} bytes; the layout needs {layout.total_bytes}"
            )
        return mmap.mmap(fd, layout.total_bytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def _remember(self, ids: WindowIds, key: str) -> None:
        """Record the window just computed or served for its slot (caller holds ``_lock``)."""
        self._records[ids.slot] = WindowRecord(key, ids.ids, {t: i for i, t in enumerate(ids.ids)})
        self._records.move_to_end(ids.slot)
        while len(self._records) > MAX_RECORDS:
            self._records.popitem(last=False)

    def _inpaint_mapped(
        self,
        layout: WindowLayout,
        params: FillParams,
        mm: mmap.mmap,
        message: dict[str, Any],
        ids: WindowIds | None = None,
    ) -> dict[str, Any]:
        T, H, W, C = layout.frames, layout.height, layout.width, layout.channels
        # Copy the inputs out of the mapping: the client may reuse it, and views would pin it open.
        view = np.frombuffer(mm, dtype=np.float32, count=layout.out_offset // 4)
        rgb = np.array(view[: T * H * W * C].reshape(T, H, W, C)[..., :3], dtype=np.float32, order="C")
        alpha = np.array(view[: T * H * W * C].reshape(T, H, W, C)[..., 3]) if C == 4 else None
        hole = np.array(view[layout.matte_offset // 4 : layout.references_offset // 4].reshape(T, H, W))
        stored = view[layout.references_offset // 4 :].reshape(len(layout.references), H, W, 3)
        references = {index: np.array(stored[k]) for k, index in enumerate(layout.references)}
        del view, stored
        key = window_key(layout, rgb, hole, params, references)
        times = message.get("times")
        span = f"frames {times[0]}-{times[-1]}" if isinstance(times, list) and times else f"{T} frames"
        with self._lock:
            result = self.cache.get(key)
            cached = result is not None
            if result is None:
                t0 = time.monotonic()
                result = self._fill(rgb, hole, params, references)
                self.cache.put(key, result)
                self.stats["computed"] += 1
                log.info(
                    "inpainted %s (%dx%d, %d reference(s)) in %.2fs",
                    span,
                    W,
                    H,
                    len(references),
                    time.monotonic() - t0,
                )
            else:
                self.stats["cached"] += 1
                log.debug("window %s from cache", span)
            if ids is not None:
                self._remember(ids, key)
        packed = np.empty((len(layout.want), H, W, C), dtype=np.float32)
        for k, index in enumerate(layout.want):
            packed[k, ..., :3] = result[index]
            if alpha is not None:
                packed[k, ..., 3] = alpha[index]  # alpha is never inpainted
        mm.seek(layout.out_offset)
        mm.write(packed.tobytes())
        return {"ok": True, "cached": cached, "key": key}

    def _fill(
        self,
        frames: np.ndarray,
        matte: np.ndarray,
        params: FillParams,
        references: dict[int, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Run the engine on one window; checks the engine kept the geometry."""
        if not np.isfinite(frames).all():
            raise ProtocolError("the frames contain NaN or infinite values; clamp or fix them upstream")
        fill = self._engine(params)
        matte = np.clip(matte, 0.0, 1.0)
        # a window without references calls the engine as before (custom engines need not know them)
        if references:
            raw = fill(frames, matte, params, references=references)
        else:
            raw = fill(frames, matte, params)
        result = np.asarray(raw, dtype=np.float32)
        if result.shape != frames.shape:
            raise RuntimeError(f"engine returned shape {result.shape}, expected {frames.shape}")
        return result
