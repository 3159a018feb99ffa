"""``combcn serve``: the protocol, the window cache, bad requests, permissions and idle exit.

The server runs in a thread of the test process with the real engine and a small seeded model.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ofx_host.fixtures import plate_and_matte, private_run_dir, tiny_weights

from combcn.cli import main as cli_main
from combcn.errors import BackendError, ConfigError
from combcn.serve import protocol
from combcn.serve.client import ServeClient
from combcn.serve.engine import load_engine, resolve_factory
from combcn.serve.protocol import WindowLayout
from combcn.serve.server import Server, ServerOptions, WindowCache


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tiny_weights(tmp_path_factory.mktemp("serve") / "tiny.pt"))


class Running:
    def __init__(self, server: Server, thread: threading.Thread, sock: Path) -> None:
        self.server, self.thread, self.sock = server, thread, sock
        self.client = ServeClient(sock, timeout=30)


@contextlib.contextmanager
def serving(weights: str) -> Iterator[Running]:
    """A server for ``weights`` on CPU in a thread of this process, stopped on exit."""
    with private_run_dir() as run:
        sock = run / "run" / "serve.sock"
        server = Server(ServerOptions(socket_path=sock, idle_timeout=0, weights=weights, device="cpu"))
        assert server.bind()
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield Running(server, thread, sock)
        finally:
            server.stop()
            thread.join(10)


@pytest.fixture
def running(weights: str) -> Iterator[Running]:
    with serving(weights) as server:
        yield server


def test_inpaint_matches_api_and_caches_the_window(running: Running, weights: str) -> None:
    from combcn import inpaint

    plate, matte = plate_and_matte(1, 4)
    out, reply = running.client.inpaint(plate, matte, want=[0, 2], shaper="acescct", feather=1.5)
    assert reply["ok"] and reply["cached"] is False
    expected = inpaint(plate, matte, weights=weights, device="cpu", shaper="acescct", feather=1.5)
    np.testing.assert_allclose(out, expected[[0, 2]], rtol=0, atol=1e-5)
    assert np.array_equal(out[..., 3], plate[[0, 2], ..., 3])
    again, reply2 = running.client.inpaint(plate, matte, want=[3], shaper="acescct", feather=1.5)
    assert reply2["cached"] is True and reply2["key"] == reply["key"]
    np.testing.assert_allclose(again[0], expected[3], rtol=0, atol=1e-5)
    # Another parameter value or other pixels are another window.
    _, reply3 = running.client.inpaint(plate, matte, want=[0], shaper="acescct", feather=0.0)
    changed = plate.copy()
    changed[2, 0, 0, 0] += 0.25
    _, reply4 = running.client.inpaint(changed, matte, want=[0], shaper="acescct", feather=1.5)
    assert (
        not reply3["cached"]
        and not reply4["cached"]
        and len({reply["key"], reply3["key"], reply4["key"]}) == 3
    )
    stats = running.client.ping()["stats"]
    assert stats["computed"] == 3 and stats["cached"] == 1


def _raw(sock: Path, data: bytes, fds: list[int] | None = None) -> dict[str, Any] | None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(sock))
        if fds:
            s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])
        else:
            s.sendall(data)
        s.shutdown(socket.SHUT_WR)  # the request ends here (a truncated frame then sees EOF)
        header = s.recv(8, socket.MSG_WAITALL)
        if len(header) < 8:
            return None
        return protocol.decode_body(s.recv(protocol.parse_header(header), socket.MSG_WAITALL))


def _memfd(nbytes: int, seal: bool = True) -> int:
    fd = os.memfd_create("t", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, nbytes)
    if seal:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    return fd


def test_malformed_requests_get_errors_and_the_server_survives(running: Running, tmp_path: Path) -> None:
    sock = running.sock
    bad_magic = _raw(sock, b"XXXX\x02\x00\x00\x00{}")
    assert bad_magic is not None and not bad_magic["ok"] and "magic" in bad_magic["error"]
    oversized = _raw(sock, protocol.HEADER.pack(protocol.MAGIC, protocol.MAX_BODY + 1))
    assert oversized is not None and "limit" in oversized["error"]
    not_json = _raw(sock, protocol.HEADER.pack(protocol.MAGIC, 3) + b"{x}")
    assert not_json is not None and "JSON" in not_json["error"]
    # Truncated frame: the peer hangs up; nothing to answer, the server just drops it.
    assert _raw(sock, protocol.HEADER.pack(protocol.MAGIC, 100) + b"{") is None
    layout = WindowLayout(2, 8, 8, 4, (0,))
    geometry = {"op": "inpaint", "frames": 2, "height": 8, "width": 8, "channels": 4, "want": [0]}
    cases: list[tuple[dict[str, Any], int | None, str]] = [
        ({"v": 99, "op": "ping"}, None, "protocol version"),
        ({"op": "dance"}, None, "unknown op"),
        (geometry, None, "descriptor"),
        ({**geometry, "frames": 0}, layout.total_bytes, "'frames'"),
        ({**geometry, "want": [5]}, layout.total_bytes, "'want'"),
        ({**geometry, "channels": 7}, layout.total_bytes, "'channels'"),
        ({**geometry, "out_offset": 4}, layout.total_bytes, "out_offset"),
        (geometry, 16, "shared memory holds"),
        ({**geometry, "params": {"expand": -1}}, layout.total_bytes, "'expand'"),
        ({**geometry, "params": {"device": "tpu"}}, layout.total_bytes, "'device'"),
        ({**geometry, "params": {"colour": 1}}, layout.total_bytes, "unknown params"),
        ({**geometry, "params": {"weights": str(tmp_path / "missing.pt")}}, layout.total_bytes, "not found"),
        ({**geometry, "params": {"shaper": "sepia"}}, layout.total_bytes, "unknown shaper"),
        ({**geometry, "references": [2]}, layout.total_bytes, "'references'"),
        ({**geometry, "references": [1, 1]}, layout.total_bytes, "'references'"),
        ({**geometry, "references": 1}, layout.total_bytes, "'references'"),
        ({**geometry, "params": {"reference_wins": "yes"}}, layout.total_bytes, "'reference_wins'"),
        # a reference's RGB follows the matte: memory sized for the frames alone is too small
        ({**geometry, "references": [1]}, layout.total_bytes, "shared memory holds"),
    ]
    unsealed = _memfd(layout.total_bytes, seal=False)
    try:
        reply = _raw(sock, protocol.encode({"v": 1, **geometry}), [unsealed])
    finally:
        os.close(unsealed)
    assert reply is not None and "F_SEAL_SHRINK" in reply["error"]
    for message, size, expect in cases:
        fd = _memfd(size) if size is not None else None
        try:
            body = protocol.encode({"v": 1, **message})
            if message.get("v") == 99:
                body = protocol.encode(message)
            reply = _raw(sock, body, [fd] if fd is not None else None)
        finally:
            if fd is not None:
                os.close(fd)
        assert reply is not None and reply["ok"] is False, message
        assert expect in reply["error"], (expect, reply["error"])
    # The engine's own refusals come back as replies too (a matte covering the whole frame).
    plate, matte = plate_and_matte(1, 2, 8, 8)
    fd = _memfd(layout.total_bytes)
    try:
        with mmap.mmap(fd, layout.total_bytes) as mm:
            mm.write(plate.tobytes())
            mm.write(np.ones((2, 8, 8), np.float32).tobytes())
        reply = _raw(sock, protocol.encode({"v": 1, **geometry, "params": {"shaper": "none"}}), [fd])
    finally:
        os.close(fd)
    assert reply is not None and not reply["ok"] and reply["kind"] == "InputError"
    with pytest.raises(BackendError):
        ServeClient(sock.parent / "nobody.sock", timeout=2).ping()
    pong = running.client.ping()
    assert pong["ok"] and pong["stats"]["errors"] >= len(cases) + 1
    assert running.thread.is_alive()


def test_socket_is_private_and_a_second_server_yields(running: Running) -> None:
    mode = running.sock.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(running.sock.parent.stat().st_mode) == 0o700
    second = Server(ServerOptions(socket_path=running.sock))
    assert second.bind() is False  # the first one holds the lock; the socket is left alone
    assert running.client.ping()["ok"]


def test_refuses_a_directory_others_can_enter(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    with pytest.raises(ConfigError, match="private directory"):
        Server(ServerOptions(socket_path=shared / "s.sock")).bind()


def test_exits_when_idle_and_removes_its_socket() -> None:
    with private_run_dir() as run:
        sock = run / "run" / "serve.sock"
        server = Server(ServerOptions(socket_path=sock, idle_timeout=0.3))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        t0 = time.monotonic()
        thread.start()
        thread.join(15)
        assert not thread.is_alive() and time.monotonic() - t0 < 10
        assert not sock.exists()


def test_shutdown_request_stops_the_server(running: Running) -> None:
    assert running.client.shutdown()["ok"]
    running.thread.join(10)
    assert not running.thread.is_alive() and not running.sock.exists()


def test_window_cache_keeps_the_most_recent_under_budget() -> None:
    cache = WindowCache(budget_bytes=3 * 400)
    arrays = {k: np.full((100,), i, np.float32) for i, k in enumerate("abcd")}
    for k in "abc":
        cache.put(k, arrays[k])
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", arrays["d"])
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 3
    cache.put("huge", np.zeros(1000, np.float32))  # over budget: not stored, nothing evicted
    assert cache.get("huge") is None and len(cache) == 3


def test_engine_factory_option() -> None:
    assert resolve_factory(None) is load_engine
    assert resolve_factory("ofx_host.slow_engine:factory").__name__ == "factory"
    with pytest.raises(ConfigError):
        resolve_factory("no_such_module_xyz:f")
    with pytest.raises(ConfigError):
        resolve_factory("missing-colon")


def test_cli_ping_without_a_server_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with private_run_dir() as run:
        code = cli_main(["serve", "--socket", str(run / "serve.sock"), "--ping"])
    assert code != 0
    assert "no combcn server answers" in capsys.readouterr().err


def test_cli_help_explains_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main(["serve", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--socket PATH",
        "-i SECONDS, --idle-timeout SECONDS",
        "--cache-mb",
        "--weights",
        "--device",
        "default: 600",
    ):
        assert option in text


def test_track_param_reaches_the_engine(tmp_path: Path) -> None:
    # weights that track the camera (plate pre-fill, keep_seen), a panning shot, a static box matte:
    # "track": false must give the API's track=False result, and the default the tracked one
    from test_track import pan_shot, plate_weights

    from combcn import inpaint

    weights = plate_weights(tmp_path / "tracked.pt", seen=True, keep_seen=True, track=True)
    rgb, box = pan_shot()
    t, height, width = rgb.shape[:3]
    plate = np.concatenate([rgb, np.ones((t, height, width, 1), np.float32)], axis=3).astype(np.float32)
    matte = np.ascontiguousarray(np.broadcast_to(box, (t, height, width)))
    with serving(weights) as running:
        client = ServeClient(running.sock, timeout=60)
        tracked, reply = client.inpaint(plate, matte, shaper="none")
        locked, reply_off = client.inpaint(plate, matte, shaper="none", track=False)
        again, _ = client.inpaint(plate, matte, shaper="none")  # the switch did not stick
    assert reply["key"] != reply_off["key"]
    want_tracked = inpaint(plate, matte, weights=weights, device="cpu", shaper="none")
    want_locked = inpaint(plate, matte, weights=weights, device="cpu", shaper="none", track=False)
    np.testing.assert_allclose(tracked, want_tracked, rtol=0, atol=1e-5)
    np.testing.assert_allclose(locked, want_locked, rtol=0, atol=1e-5)
    np.testing.assert_allclose(again, want_tracked, rtol=0, atol=1e-5)
    # the two really differ (far beyond the 1e-5 above), so a server that dropped the switch would fail;
    # by how much depends on how the probes fill what no frame shows (the network's share of it)
    assert np.abs(tracked - locked)[matte > 0].max() > 0.01


def test_bad_track_param() -> None:
    with pytest.raises(protocol.ProtocolError, match="'track' must be true or false"):
        protocol.params_from_request({"params": {"track": "no"}})
    assert protocol.params_from_request({"params": {"track": False}}).track is False
    assert protocol.params_from_request({}).track is True


def test_sixty_concurrent_clients_all_succeed(weights: str) -> None:
    """A full connect queue is waited out, not reported as a dead server: 60 clients at once against
    a real ``combcn serve`` process (listen queue 16) all get their window."""
    import subprocess

    from ofx_host.fixtures import COMBCN

    plate, matte = plate_and_matte(1, 4, height=16, width=24)
    with private_run_dir() as run:
        sock = run / "run" / "serve.sock"
        read_fd, write_fd = os.pipe()
        proc = subprocess.Popen(
            [
                str(COMBCN),
                "serve",
                "--socket",
                str(sock),
                "--idle-timeout",
                "0",
                "--weights",
                weights,
                "--device",
                "cpu",
                "--ready-fd",
                str(write_fd),
            ],
            pass_fds=(write_fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(write_fd)
        try:
            assert os.read(read_fd, 1) == b"R", proc.stderr.read() if proc.stderr else ""
            ServeClient(sock, timeout=60).inpaint(plate, matte)  # the model is loaded and the window cached
            barrier = threading.Barrier(60)
            results: list[Any] = [None] * 60

            def one(i: int) -> None:
                client = ServeClient(sock, timeout=60)
                barrier.wait()
                try:
                    out, reply = client.inpaint(plate, matte, want=[i % 4])
                    results[i] = (reply["ok"], out.shape)
                except Exception as exc:  # noqa: BLE001 - recorded and asserted below
                    results[i] = exc

            threads = [threading.Thread(target=one, args=(i,)) for i in range(60)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            failures = [r for r in results if not (isinstance(r, tuple) and r[0])]
            assert not failures, f"{len(failures)} of 60 clients failed, e.g. {failures[0]!r}"
            assert {r[1] for r in results} == {(1, 16, 24, 4)}
        finally:
            os.close(read_fd)
            with contextlib.suppress(Exception):
                ServeClient(sock, timeout=5).shutdown()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_lookup_answers_only_for_the_same_slot_and_frame(running: Running) -> None:
    """A lookup hits only when the server holds a window for this slot computed with this very frame;
    a new window for the slot replaces the old one (so its other frames are never served stale)."""
    from combcn.serve.protocol import WindowIds

    plate, matte = plate_and_matte(1, 4)
    ids = WindowIds("ab12", {1001 + i: f"{i:x}0" for i in range(4)})
    client = running.client

    def lookup(t: int, frame_id: str, slot: str = "ab12") -> np.ndarray | None:
        i = min(t - 1001, 3)  # the pixels sent (a frame outside the window sends the last one's)
        out, reply = client.lookup(plate[i], matte[i], slot=slot, time=t, frame_id=frame_id)
        assert reply["ok"], reply
        return out

    assert lookup(1002, "10") is None  # nothing computed yet
    full, reply = client.inpaint(plate, matte, ids=ids, shaper="none")
    assert reply["ok"] and not reply["cached"]
    hit = lookup(1002, "10")
    assert hit is not None and np.array_equal(hit, full[1])
    assert np.array_equal(hit[..., 3], plate[1, ..., 3])  # alpha: the frame's own
    assert lookup(1002, "99") is None  # the frame changed: its id differs
    assert lookup(1002, "10", slot="cd34") is None  # another instance, span or parameter set
    assert lookup(1009, "10") is None  # not a frame of that window
    # Frame 1003 changed upstream and its window was computed again: frame 1002, whose own id did not
    # change, now comes from the new window.
    edited = plate.copy()
    edited[2, ..., :3] += 0.5
    ids2 = WindowIds("ab12", {**ids.ids, 1003: "ff"})
    full2, _ = client.inpaint(edited, matte, ids=ids2, shaper="none")
    hit2 = lookup(1002, "10")
    assert hit2 is not None and np.array_equal(hit2, full2[1])
    stats = client.ping()["stats"]
    assert stats["lookup_hits"] == 2 and stats["lookup_misses"] == 4 and stats["computed"] == 2, stats


def test_lookup_and_window_ids_are_validated(running: Running) -> None:
    plate, matte = plate_and_matte(1, 2)
    client = running.client
    _, reply = client.lookup(plate[0], matte[0], slot="NOT HEX", time=1, frame_id="00")
    assert not reply["ok"] and "slot" in reply["error"]
    bad = client.request({"op": "lookup", "frames": 2, "height": 32, "width": 48, "channels": 4, "want": [0]})
    assert not bad["ok"]  # no descriptor, two frames
    layout = WindowLayout(2, 32, 48, 4, (0,))
    fd = _memfd(layout.total_bytes)
    try:
        reply = client.request(
            {
                "op": "inpaint",
                "frames": 2,
                "height": 32,
                "width": 48,
                "channels": 4,
                "want": [0],
                "slot": "aa",
                "times": [1],
                "frame_ids": ["00", "11"],
            },
            fd,
        )
    finally:
        os.close(fd)
    assert not reply["ok"] and "times" in reply["error"]
    assert client.ping()["ok"]


def test_layout_places_the_references_between_the_matte_and_the_output() -> None:
    plain = WindowLayout(3, 4, 5, 4, (1,))
    with_refs = WindowLayout(3, 4, 5, 4, (1,), (0, 2))
    assert plain.references_offset == plain.out_offset == 3 * 20 * 5 * 4
    assert with_refs.references_offset == plain.out_offset
    assert with_refs.out_offset == plain.out_offset + 2 * 20 * 3 * 4
    assert with_refs.total_bytes == with_refs.out_offset + 20 * 4 * 4
    message = {"frames": 3, "height": 4, "width": 5, "channels": 4, "want": [1], "references": [2, 0]}
    assert protocol.layout_from_request(message).references == (2, 0)  # stored in the order named
    assert protocol.layout_from_request({**message, "references": []}) == plain
    with pytest.raises(protocol.ProtocolError, match="out_offset"):
        protocol.layout_from_request({**message, "out_offset": plain.out_offset})
    with pytest.raises(protocol.ProtocolError, match="no references"):
        lookup = {"frames": 1, "want": [0], "references": [0], "slot": "ab", "time": 1, "frame_id": "cd"}
        protocol.lookup_from_request({**message, **lookup})
    assert protocol.params_from_request({"params": {"reference_wins": True}}).reference_wins is True
    assert protocol.params_from_request({}).reference_wins is False


def painted_reference(plate: np.ndarray, matte: np.ndarray, index: int) -> np.ndarray:
    """Frame ``index`` of the plate with its hole painted by hand (a flat colour no frame shows)."""
    reference = plate[index].copy()
    reference[matte[index] > 0, :3] = np.float32([0.9, 0.1, 0.6])
    return reference


def test_references_reach_the_engine_and_the_cache_key(running: Running, weights: str) -> None:
    """A window with a reference is the API's ``references=`` render of the same frames (and
    ``reference_wins`` its own); the reference's pixels and position are part of the cache key."""
    from combcn import inpaint

    plate, matte = plate_and_matte(1, 6)
    reference = painted_reference(plate, matte, 1)
    client = running.client
    plain, reply_plain = client.inpaint(plate, matte, shaper="none")
    carried, reply = client.inpaint(plate, matte, shaper="none", references={1: reference})
    wins, reply_wins = client.inpaint(
        plate, matte, shaper="none", references={1: reference}, reference_wins=True
    )
    expected = inpaint(plate, matte, weights=weights, device="cpu", shaper="none", references={1: reference})
    np.testing.assert_allclose(carried, expected, rtol=0, atol=1e-5)
    expected_wins = inpaint(
        plate,
        matte,
        weights=weights,
        device="cpu",
        shaper="none",
        references={1: reference},
        reference_wins=True,
    )
    np.testing.assert_allclose(wins, expected_wins, rtol=0, atol=1e-5)
    assert np.array_equal(carried[..., 3], plate[..., 3])  # alpha is never inpainted
    # the painted colour travelled: the fill of another frame moved towards it
    hole = matte[3] > 0
    assert np.abs(carried[3][hole] - plain[3][hole]).max() > 0.05
    again, reply_again = client.inpaint(plate, matte, shaper="none", references={1: reference})
    assert reply_again["cached"] and reply_again["key"] == reply["key"]
    repainted = reference.copy()
    repainted[matte[1] > 0, 0] += 0.25
    _, reply_repainted = client.inpaint(plate, matte, shaper="none", references={1: repainted})
    _, reply_moved = client.inpaint(
        plate, matte, shaper="none", references={2: painted_reference(plate, matte, 2)}
    )
    keys = [r["key"] for r in (reply_plain, reply, reply_wins, reply_repainted, reply_moved)]
    assert len(set(keys)) == 5 and not reply_repainted["cached"]


def test_a_reference_the_engine_refuses_comes_back_as_an_input_error(running: Running) -> None:
    plate, matte = plate_and_matte(1, 3)
    reference = painted_reference(plate, matte, 0)
    reference[matte[0] > 0, 1] = np.nan  # NaN inside the hole
    _, reply = running.client.inpaint(plate, matte, shaper="none", references={0: reference})
    assert not reply["ok"] and reply["kind"] == "InputError" and "NaN" in reply["error"]
    assert running.client.ping()["ok"]
