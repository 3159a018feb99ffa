"""The CombCN OpenFX plugin, built from the root CMakeLists.txt and loaded by our own headless host.

No OpenFX host application (Nuke, Resolve, Natron) can run here, so ``tests/ofx_host`` is a host of
our own (Python ctypes, in a subprocess): it dlopens the real ``.ofx`` binary, runs load, describe,
describeInContext(general), createInstance, sets parameters, serves a different real EXR frame per
time plus a mask, and renders. The plugin starts a real ``combcn serve`` process, which runs the
real engine with a small seeded model; the test compares the frames with ``combcn.inpaint``.
"""

from __future__ import annotations

import ctypes
import json
import os
import plistlib
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ofx_host.fixtures import (
    BINARY,
    BUNDLE,
    build_bundle,
    host_env,
    plate_and_matte,
    private_run_dir,
    run_host,
    tiny_weights,
    write_plates,
)
from ofx_host.host import read_exr

from combcn.serve.client import ServeClient

FIRST, LAST = 1001, 1006
OK, FAILED = 0, 1


@pytest.fixture(scope="module")
def binary() -> Path:
    return build_bundle()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("ofx_plates")
    plate, matte = plate_and_matte(FIRST, LAST)
    source, mask = write_plates(folder, FIRST, plate, matte)
    weights = tiny_weights(folder / "tiny.pt")
    return {"plate": plate, "matte": matte, "source": source, "mask": mask, "weights": str(weights)}


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The server runs with OMP_NUM_THREADS=1 (host_env); compute the expected fills with one thread too,
    since oneDNN's reduction order, and so the last bits of a fill, depend on the thread count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    with private_run_dir() as path:
        yield path


def base_job(data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    params = {"windowLength": 4, "weights": data["weights"], "device": 1}  # device 1 = cpu
    params.update(extra.pop("set_params", {}))
    return {
        "source": data["source"],
        "mask": data["mask"],
        "first": FIRST,
        "last": LAST,
        "set_params": params,
        **extra,
    }


def test_bundle_layout_and_exports(binary: Path) -> None:
    assert binary == BINARY and binary.is_file()
    plist = plistlib.loads((BUNDLE / "Contents" / "Info.plist").read_bytes())
    assert plist["CFBundleExecutable"] == "CombCN.ofx"
    assert (BUNDLE / "Contents" / "Resources" / "io.github.combcn.Inpaint.png").is_file()
    lib = ctypes.CDLL(str(binary), mode=os.RTLD_LOCAL)
    assert lib.OfxGetNumberOfPlugins() == 1
    # Only the OpenFX entry points are exported: libstdc++ is linked statically and kept local.
    nm = subprocess.run(
        ["nm", "-D", "--defined-only", str(binary)], capture_output=True, text=True
    )  # binutils
    assert nm.returncode == 0, nm.stderr
    names = {line.split()[-1] for line in nm.stdout.splitlines() if line.strip()}
    assert names == {"OfxGetPlugin", "OfxGetNumberOfPlugins"}


def test_describe_declares_temporal_general_effect(binary: Path, data: dict[str, Any], run_dir: Path) -> None:
    result = run_host(base_job(data, render=[]), run_dir, host_env(run_dir))
    assert result["plugin"]["id"] == "io.github.combcn.Inpaint"
    assert result["load"] == OK and result["describe"] == OK and result["describe_in_context"] == OK
    assert result["create_instance"] == OK
    d = result["descriptor"]
    assert set(d["OfxImageEffectPropSupportedContexts"]) == {
        "OfxImageEffectContextGeneral",
        "OfxImageEffectContextFilter",
    }
    assert d["OfxImageEffectPropTemporalClipAccess"] == [1]
    assert d["OfxImageEffectPropSupportsTiles"] == [0]
    assert d["OfxImageEffectPropSupportedPixelDepths"] == ["OfxBitDepthFloat"]
    assert d["OfxImageEffectPluginRenderThreadSafety"] == ["OfxImageEffectRenderFullySafe"]
    clips = result["clips"]
    assert set(clips) == {"Source", "Mask", "Reference", "Output"}
    assert clips["Mask"]["OfxImageClipPropOptional"] == [1] and clips["Mask"]["OfxImageClipPropIsMask"] == [1]
    assert clips["Reference"]["OfxImageClipPropOptional"] == [1]
    assert "OfxImageClipPropIsMask" not in clips["Reference"]
    assert clips["Source"]["OfxImageEffectPropTemporalClipAccess"] == [1]
    params = result["params"]
    expected = {
        "windowLength": "OfxParamTypeInteger",
        "contextFrames": "OfxParamTypeInteger",
        "matteChannel": "OfxParamTypeChoice",
        "invert": "OfxParamTypeBoolean",
        "expand": "OfxParamTypeInteger",
        "feather": "OfxParamTypeDouble",
        "shaper": "OfxParamTypeChoice",
        "device": "OfxParamTypeChoice",
        "weights": "OfxParamTypeString",
        "trackCamera": "OfxParamTypeBoolean",
        "referenceFrames": "OfxParamTypeString",
        "referenceWins": "OfxParamTypeBoolean",
    }
    assert {k: v["type"] for k, v in params.items()} == expected
    assert params["trackCamera"]["OfxParamPropDefault"] == [1]  # as the weights say, unless turned off
    assert params["weights"]["OfxParamPropStringMode"] == ["OfxParamStringIsFilePath"]
    assert params["shaper"]["OfxParamPropChoiceOption"] == ["acescct", "log", "none", "srgb"]
    assert params["referenceFrames"]["OfxParamPropDefault"] == [""]  # no references
    assert params["referenceWins"]["OfxParamPropDefault"] == [0]
    assert result["clip_preferences_out"]["OfxImageClipPropDepth_Output"] == ["OfxBitDepthFloat"]
    assert result["violations"] == [] and result["messages"] == []


def test_track_camera_param_reaches_the_server(binary: Path, data: dict[str, Any], run_dir: Path) -> None:
    # the plugin's "Track camera" checkbox travels in the request's params (recorded by a test engine
    # factory that then runs the real engine)
    record = run_dir / "params.jsonl"
    env = host_env(
        run_dir, COMBCN_SERVE_ENGINE="ofx_host.recording_engine:factory", COMBCN_TEST_PARAMS=str(record)
    )
    for value in (0, 1):
        job = base_job(
            data, render=[1001], out=str(run_dir / f"out{value}.%d.exr"), set_params={"trackCamera": value}
        )
        result = run_host(job, run_dir, env)
        assert [r["status"] for r in result["renders"]] == [OK], result["stderr"][-2000:]
    tracks = [json.loads(line)["track"] for line in record.read_text().splitlines()]
    assert tracks == [False, True]


def test_render_matches_inpaint(binary: Path, data: dict[str, Any], run_dir: Path) -> None:
    from combcn import inpaint

    job = base_job(
        data,
        render=[1001, 1002, 1005],
        out=str(run_dir / "out.%d.exr"),
        set_params={"expand": 1, "shaper": 0},
    )  # acescct shaper: plate values go above 1
    result = run_host(job, run_dir, host_env(run_dir))
    assert result["violations"] == [], result["violations"]
    assert result["messages"] == [], result["messages"]
    renders = {r["time"]: r for r in result["renders"]}
    assert [r["status"] for r in result["renders"]] == [OK, OK, OK], result["stderr"][-2000:]
    # getFramesNeeded declares the aligned window around the render time, for Source and Mask.
    assert renders[1002]["frames_needed"] == {"Source": [1001.0, 1004.0], "Mask": [1001.0, 1004.0]}
    assert renders[1005]["frames_needed"] == {"Source": [1005.0, 1006.0], "Mask": [1005.0, 1006.0]}
    # The first render of a window fetched all of it (clipGetImage at other times); the second one
    # found the window on the server and fetched only its own frame.
    assert sorted({f for c, f in renders[1001]["fetched"] if c == "Source"}) == [
        1001.0,
        1002.0,
        1003.0,
        1004.0,
    ]
    assert sorted(renders[1002]["fetched"]) == [["Mask", 1002.0], ["Output", 1002.0], ["Source", 1002.0]]
    plate, matte = data["plate"], data["matte"]
    for first, last, times in ((1001, 1004, (1001, 1002)), (1005, 1006, (1005,))):
        window = slice(first - FIRST, last - FIRST + 1)
        expected = inpaint(
            plate[window], matte[window], weights=data["weights"], device="cpu", expand=1, shaper="acescct"
        )
        for t in times:
            out = read_exr(str(run_dir / f"out.{t}.exr"))
            assert not np.isnan(out).any(), "the plugin left pixels of the render window unwritten"
            np.testing.assert_allclose(out, expected[t - first], rtol=0, atol=1e-5)
            src = plate[t - FIRST]
            keep = matte[t - FIRST] == 0
            keep[1:] &= matte[t - FIRST][:-1] == 0  # expand=1 grows the matte: compare well outside it
            keep[:-1] &= matte[t - FIRST][1:] == 0
            keep[:, 1:] &= matte[t - FIRST][:, :-1] == 0
            keep[:, :-1] &= matte[t - FIRST][:, 1:] == 0
            assert np.array_equal(out[keep], src[keep]), "pixels outside the matte must be bit-exact"
            assert np.array_equal(out[..., 3], src[..., 3]), "alpha is passed through"
            assert not np.array_equal(out, src), "the hole was filled"
    # The second frame of a window came from the server's cache: two windows computed, one lookup hit.
    stats = ServeClient(run_dir / "run" / "serve.sock", timeout=10).ping()["stats"]
    assert stats["computed"] == 2 and stats["lookup_hits"] == 1 and stats["cached"] == 0, stats


def test_missing_server_fails_cleanly(binary: Path, data: dict[str, Any], run_dir: Path) -> None:
    for serve, expect in ((str(run_dir / "no-such-combcn"), "COMBCN_SERVE"), ("/bin/false", "start-up")):
        result = run_host(base_job(data, render=[1001, 1002]), run_dir, host_env(run_dir, COMBCN_SERVE=serve))
        assert [r["status"] for r in result["renders"]] == [FAILED, FAILED]
        errors = [m for m in result["messages"] if m["type"] == "OfxMessageError"]
        assert len(errors) == 2 and expect in errors[0]["text"], result["messages"]
        assert all(r["seconds"] < 20 for r in result["renders"])
        assert result["violations"] == []


def test_server_killed_mid_render_then_recovers(binary: Path, data: dict[str, Any], run_dir: Path) -> None:
    marker = run_dir / "engine.pid"
    env = host_env(
        run_dir, COMBCN_SERVE_ENGINE="ofx_host.slow_engine:factory", COMBCN_TEST_MARKER=str(marker)
    )
    killed: dict[str, float] = {}

    def killer() -> None:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if marker.exists():
            os.kill(int(marker.read_text()), signal.SIGKILL)
            killed["at"] = time.monotonic()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    result = run_host(base_job(data, render=[1001, 1005], out=str(run_dir / "out.%d.exr")), run_dir, env)
    thread.join(5)
    assert "at" in killed, "the slow engine never started"
    first, second = result["renders"]
    assert first["status"] == FAILED
    assert first["seconds"] < 45, "the plugin waited instead of noticing the dead server"
    errors = [m["text"] for m in result["messages"] if m["type"] == "OfxMessageError"]
    assert len(errors) == 1 and "closed the connection" in errors[0], errors
    assert second["status"] == OK, "the next render should start a fresh server"
    assert result["violations"] == []


def test_hung_server_times_out(binary: Path, data: dict[str, Any], run_dir: Path) -> None:
    marker = run_dir / "engine.pid"
    env = host_env(
        run_dir,
        COMBCN_SERVE_ENGINE="ofx_host.slow_engine:factory",
        COMBCN_TEST_MARKER=str(marker),
        COMBCN_SERVE_TIMEOUT="3",
    )
    try:
        result = run_host(base_job(data, render=[1001]), run_dir, env)
    finally:
        if marker.exists():
            os.kill(int(marker.read_text()), signal.SIGKILL)
    (render,) = result["renders"]
    assert render["status"] == FAILED and render["seconds"] < 30
    errors = [m["text"] for m in result["messages"] if m["type"] == "OfxMessageError"]
    assert len(errors) == 1 and "timed out" in errors[0], errors


def test_parallel_renders_of_one_window_compute_it_once(
    binary: Path, data: dict[str, Any], run_dir: Path
) -> None:
    """The plugin declares OfxImageEffectRenderFullySafe: four render threads at once, one window."""
    from combcn import inpaint

    job = base_job(data, render=[1001, 1002, 1003, 1004], threads=4, out=str(run_dir / "out.%d.exr"))
    result = run_host(job, run_dir, host_env(run_dir))
    assert [r["status"] for r in result["renders"]] == [OK] * 4, result["messages"]
    assert result["max_concurrent_renders"] >= 2 and result["violations"] == []
    expected = inpaint(data["plate"][:4], data["matte"][:4], weights=data["weights"], device="cpu")
    for i, t in enumerate(range(1001, 1005)):
        np.testing.assert_allclose(read_exr(str(run_dir / f"out.{t}.exr")), expected[i], rtol=0, atol=1e-5)
    stats = ServeClient(run_dir / "run" / "serve.sock", timeout=10).ping()["stats"]
    # renders that asked before the window was done fetched it all and found it in the cache
    assert stats["computed"] == 1 and stats["cached"] + stats["lookup_hits"] == 3, stats


def test_filter_context_takes_the_matte_from_a_source_channel(
    binary: Path, data: dict[str, Any], run_dir: Path, tmp_path: Path
) -> None:
    from combcn import inpaint

    plate = data["plate"].copy()
    plate[..., 3] = 1.0 - data["matte"]  # the matte rides in alpha, inverted (0 = remove)
    source, _ = write_plates(tmp_path, FIRST, plate, data["matte"])
    job = base_job(
        data,
        context="OfxImageEffectContextFilter",
        source=source,
        mask=None,
        render=[1003],
        out=str(run_dir / "out.%d.exr"),
        set_params={"invert": 1, "shaper": 1},
    )  # log shaper
    result = run_host(job, run_dir, host_env(run_dir))
    assert set(result["clips"]) == {"Source", "Output"}
    (render,) = result["renders"]
    assert render["status"] == OK, result["messages"]
    expected = inpaint(
        plate[:4], plate[:4, ..., 3], invert=True, weights=data["weights"], device="cpu", shaper="log"
    )
    np.testing.assert_allclose(read_exr(str(run_dir / "out.1003.exr")), expected[2], rtol=0, atol=1e-5)


def test_without_a_mask_the_source_passes_through(binary: Path, data: dict[str, Any], run_dir: Path) -> None:
    job = base_job(data, mask=None, render=[1002], out=str(run_dir / "out.%d.exr"))
    result = run_host(job, run_dir, host_env(run_dir, COMBCN_SERVE="/bin/false"))  # no server needed
    (render,) = result["renders"]
    assert render["identity_status"] == OK and render["identity"]["OfxPropName"] == ["Source"]
    assert render["status"] == OK and result["messages"] == []
    assert np.array_equal(read_exr(str(run_dir / "out.1002.exr")), data["plate"][1])


def test_context_frames_widen_the_window(binary: Path, data: dict[str, Any], run_dir: Path) -> None:
    from combcn import inpaint

    job = base_job(
        data,
        render=[1003, 1004],
        out=str(run_dir / "out.%d.exr"),
        set_params={"windowLength": 2, "contextFrames": 1},
    )
    result = run_host(job, run_dir, host_env(run_dir))
    assert [r["status"] for r in result["renders"]] == [OK, OK], result["messages"]
    # Block 1003-1004 plus one frame each side, clipped to the clip (1001-1006).
    assert result["renders"][0]["frames_needed"]["Source"] == [1002.0, 1005.0]
    expected = inpaint(data["plate"][1:5], data["matte"][1:5], weights=data["weights"], device="cpu")
    for t in (1003, 1004):
        np.testing.assert_allclose(
            read_exr(str(run_dir / f"out.{t}.exr")), expected[t - 1002], rtol=0, atol=1e-5
        )
    stats = ServeClient(run_dir / "run" / "serve.sock", timeout=10).ping()["stats"]
    assert stats["computed"] == 1 and stats["lookup_hits"] == 1, stats


def test_host_abort_and_wrong_depth_fail_without_starting_a_server(
    binary: Path, data: dict[str, Any], run_dir: Path
) -> None:
    env = host_env(run_dir, COMBCN_SERVE="/bin/false")  # a server start would fail loudly
    aborted = run_host(base_job(data, render=[1002], abort_after=2), run_dir, env)
    (render,) = aborted["renders"]
    assert render["status"] == FAILED and aborted["messages"] == []  # an abort is not an error to report
    assert aborted["violations"] == []
    half = run_host(base_job(data, render=[1002], source_depth="OfxBitDepthHalf"), run_dir, env)
    (render,) = half["renders"]
    assert render["status"] == FAILED
    (message,) = half["messages"]
    assert message["type"] == "OfxMessageError" and "32-bit float" in message["text"]
    assert half["violations"] == []


@pytest.mark.cuda
def test_render_on_cuda_matches_inpaint(binary: Path, data: dict[str, Any], run_dir: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here")
    from combcn import inpaint

    job = base_job(data, render=[1002], out=str(run_dir / "out.%d.exr"), set_params={"device": 2})  # cuda
    result = run_host(job, run_dir, host_env(run_dir))
    assert [r["status"] for r in result["renders"]] == [OK], result["messages"]
    expected = inpaint(data["plate"][:4], data["matte"][:4], weights=data["weights"], device="cuda")
    np.testing.assert_allclose(read_exr(str(run_dir / "out.1002.exr")), expected[1], rtol=0, atol=1e-3)


def test_server_discovery_default_socket_python_and_path(
    binary: Path, data: dict[str, Any], run_dir: Path
) -> None:
    """Without COMBCN_SERVE_SOCKET the plugin and `combcn serve` agree on $XDG_RUNTIME_DIR/combcn/serve.sock;
    the server program comes from COMBCN_PYTHON, or from `combcn` on PATH."""
    import sys

    xdg = run_dir / "xdg"
    xdg.mkdir(mode=0o700)
    sock = xdg / "combcn" / "serve.sock"
    venv_bin = str(Path(sys.executable).parent)
    variants = {
        "python": {"COMBCN_PYTHON": sys.executable},
        "path": {"PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")},
    }
    for name, extra in variants.items():
        env = host_env(run_dir, XDG_RUNTIME_DIR=str(xdg), **extra)
        for key in ("COMBCN_SERVE_SOCKET", "COMBCN_SERVE") + (("COMBCN_PYTHON",) if name == "path" else ()):
            env.pop(key, None)
        try:
            result = run_host(base_job(data, render=[1001]), run_dir, env)
            assert [r["status"] for r in result["renders"]] == [OK], (name, result["messages"])
            assert (
                stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
                and stat.S_IMODE(sock.stat().st_mode) == 0o600
            )
            pid = ServeClient(sock, timeout=10).ping()["pid"]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert (b"-m" in cmdline) == (name == "python"), cmdline
        finally:
            if sock.exists():
                ServeClient(sock, timeout=10).shutdown()
                deadline = time.monotonic() + 10
                while sock.exists() and time.monotonic() < deadline:
                    time.sleep(0.05)


def test_frames_missing_from_the_clip_are_left_out(binary: Path, data: dict[str, Any], run_dir: Path) -> None:
    from combcn import inpaint

    job = base_job(
        data, render=[1002], out=str(run_dir / "out.%d.exr"), missing={"Source": [1003], "Mask": [1004]}
    )
    result = run_host(job, run_dir, host_env(run_dir))
    assert [r["status"] for r in result["renders"]] == [OK], result["messages"]
    # Source 1003 is absent: the window is 1001, 1002, 1004; the Mask's absent 1004 means "remove nothing".
    keep = [0, 1, 3]
    matte = data["matte"][keep].copy()
    matte[2] = 0.0
    expected = inpaint(data["plate"][keep], matte, weights=data["weights"], device="cpu")
    np.testing.assert_allclose(read_exr(str(run_dir / "out.1002.exr")), expected[1], rtol=0, atol=1e-5)


def test_window_cache_fetches_once_and_refetches_a_changed_frame(
    binary: Path, data: dict[str, Any], run_dir: Path
) -> None:
    """The second frame of a window asks the server first and fetches only itself; a frame changed
    upstream does not match the server's record, so its window is fetched and computed again, and
    the window's other frames then come from the new one."""
    from combcn import inpaint

    job = base_job(
        data,
        render=[1001, 1002, 1002, 1003],
        edits=[{"before": 2, "clip": "Source", "frame": 1002, "add": 0.25}],
        out=str(run_dir / "out.%d.exr"),
    )
    result = run_host(job, run_dir, host_env(run_dir))
    renders = result["renders"]
    assert [r["status"] for r in renders] == [OK] * 4, result["messages"]
    assert result["violations"] == [] and result["messages"] == []
    counts = [len(r["fetched"]) for r in renders]
    assert counts == [9, 3, 9, 3], counts  # 4 Source + 4 Mask + Output; own Source + Mask + Output
    stats = ServeClient(run_dir / "run" / "serve.sock", timeout=10).ping()["stats"]
    assert stats["computed"] == 2 and stats["lookup_hits"] == 2, stats
    edited = data["plate"][:4].copy()
    edited[1, ..., :3] += np.float32(0.25)
    expected = inpaint(edited, data["matte"][:4], weights=data["weights"], device="cpu")
    for t in (1002, 1003):  # written by the renders after the edit (1002 overwritten by the third)
        np.testing.assert_allclose(
            read_exr(str(run_dir / f"out.{t}.exr")), expected[t - 1001], rtol=0, atol=1e-5
        )
    before = inpaint(data["plate"][:4], data["matte"][:4], weights=data["weights"], device="cpu")
    assert not np.allclose(expected[2], before[2], atol=1e-5), "the edit should reach the other frames' fill"


def test_premultiplied_source_is_filled_straight(
    binary: Path, data: dict[str, Any], run_dir: Path, tmp_path: Path
) -> None:
    """A premultiplied Source (Nuke's default) is divided by alpha before the fill and multiplied back;
    alpha is untouched, pixels with alpha 0 are sent and returned as they are, and pixels outside the
    matte are the Source's bit for bit."""
    from combcn import inpaint

    straight = data["plate"].copy()
    alpha = np.ones(straight.shape[:3], np.float32)
    alpha[:, :, :24] = 0.5  # half the hole lies over alpha 0.5
    alpha[:, 0:4, 0:6] = 0.0
    premult = straight.copy()
    premult[..., :3] *= alpha[..., None]
    premult[..., 3] = alpha
    premult[:, 0:4, 0:6, :3] = 0.1  # alpha 0 with colour (a glow): left as is
    source, _ = write_plates(tmp_path, FIRST, premult, data["matte"])
    job = base_job(data, source=source, premultiplied=True, render=[1002], out=str(run_dir / "out.%d.exr"))
    result = run_host(job, run_dir, host_env(run_dir))
    assert [r["status"] for r in result["renders"]] == [OK], result["messages"]
    sent = premult[:4].copy()
    nonzero = alpha[:4] != 0
    sent[..., :3][nonzero] = premult[:4, ..., :3][nonzero] / alpha[:4][nonzero][:, None]
    filled = inpaint(sent, data["matte"][:4], weights=data["weights"], device="cpu")[1]
    expected = filled.copy()
    a = alpha[1]
    expected[..., :3] = np.where(a[..., None] != 0, filled[..., :3] * a[..., None], filled[..., :3])
    out = read_exr(str(run_dir / "out.1002.exr"))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
    assert np.array_equal(out[..., 3], premult[1, ..., 3]), "alpha is passed through"
    keep = data["matte"][1] == 0
    assert np.array_equal(out[keep], premult[1][keep]), "pixels outside the matte must be bit-exact"
    hole = data["matte"][1] > 0
    naive = inpaint(premult[:4], data["matte"][:4], weights=data["weights"], device="cpu")[1]
    assert np.abs(out[hole] - naive[hole]).max() > 1e-3, (
        "the fill should differ from filling premultiplied colour"
    )


@pytest.mark.parametrize("message_v2", [False, True])
def test_failures_use_persistent_messages_where_the_host_has_them(
    binary: Path, data: dict[str, Any], run_dir: Path, message_v2: bool
) -> None:
    """With message suite V2 a failed render sets one persistent message on the node (no dialog per
    frame) and the next good render clears it; a host with only V1 gets the old message call."""
    marker = run_dir / "engine.pid"
    env = host_env(
        run_dir, COMBCN_SERVE_ENGINE="ofx_host.slow_engine:factory", COMBCN_TEST_MARKER=str(marker)
    )

    def killer() -> None:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if marker.exists():
            os.kill(int(marker.read_text()), signal.SIGKILL)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    job = base_job(data, render=[1001, 1005, 1006], message_v2=message_v2)
    result = run_host(job, run_dir, env)
    thread.join(5)
    assert [r["status"] for r in result["renders"]] == [FAILED, OK, OK], (
        result["messages"],
        result["persistent"],
    )
    if message_v2:
        assert result["messages"] == []
        events = result["persistent"]
        assert [e["op"] for e in events] == ["set", "clear"], events  # cleared once, not per frame
        assert events[0]["type"] == "OfxMessageError" and "closed the connection" in events[0]["text"]
    else:
        assert result["persistent"] == []
        errors = [m["text"] for m in result["messages"] if m["type"] == "OfxMessageError"]
        assert len(errors) == 1 and "closed the connection" in errors[0], errors


def test_server_that_never_starts_is_killed_and_named_right(
    binary: Path, data: dict[str, Any], run_dir: Path
) -> None:
    pid_file = run_dir / "hung.pid"
    script = run_dir / "hung-combcn"
    script.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 300\n")
    script.chmod(0o755)
    env = host_env(run_dir, COMBCN_SERVE=str(script), COMBCN_SERVE_STARTUP_TIMEOUT="2")
    result = run_host(base_job(data, render=[1001], message_v2=True), run_dir, env)
    (render,) = result["renders"]
    assert render["status"] == FAILED and render["seconds"] < 20
    (event,) = result["persistent"]
    assert "set COMBCN_SERVE_STARTUP_TIMEOUT to wait longer" in event["text"], event
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    state = "?"
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break  # killed and reaped
        if state == "Z":
            break  # killed; its reaper (init) has not collected it yet
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"the hung server {pid} was left running (state {state})")


def painted_reference(plate: np.ndarray, matte: np.ndarray, index: int) -> np.ndarray:
    """Frame ``index`` of the plate with its hole painted by hand (a flat colour no frame shows), RGBA."""
    reference = plate[index].copy()
    reference[matte[index] > 0, :3] = np.float32([0.9, 0.1, 0.6])
    return reference


def write_reference(folder: Path, frame: int, pixels: np.ndarray) -> str:
    from ofx_host.host import write_exr

    write_exr(str(folder / f"reference.{frame}.exr"), pixels)
    return str(folder / "reference.%d.exr")


def test_reference_frame_is_carried_as_the_engine_carries_it(
    binary: Path, data: dict[str, Any], run_dir: Path, tmp_path: Path
) -> None:
    """A Reference clip and the frame it shows clean: a block holding that frame, and a block after it
    (the window sent then starts at the reference), equal ``combcn.inpaint`` with ``references=`` on
    the frames sent, and ``combcn inpaint --reference`` on those frames' files; the block's second frame
    comes from the server's cache."""
    from combcn import inpaint
    from combcn.cli import main as cli_main

    plate, matte = data["plate"], data["matte"]
    reference = painted_reference(plate, matte, 1)
    record = run_dir / "params.jsonl"
    env = host_env(
        run_dir, COMBCN_SERVE_ENGINE="ofx_host.recording_engine:factory", COMBCN_TEST_PARAMS=str(record)
    )
    job = base_job(
        data,
        reference=write_reference(tmp_path, 1002, reference),
        render=[1003, 1005, 1006],
        out=str(run_dir / "out.%d.exr"),
        set_params={"referenceFrames": "1002"},
    )
    result = run_host(job, run_dir, env)
    renders = {r["time"]: r for r in result["renders"]}
    assert [r["status"] for r in result["renders"]] == [OK, OK, OK], result["messages"]
    assert result["violations"] == [] and result["messages"] == []
    # Inside its block the reference adds only itself; after it, the window reaches back to it.
    assert renders[1003]["frames_needed"] == {
        "Source": [1001.0, 1004.0],
        "Mask": [1001.0, 1004.0],
        "Reference": [1002.0, 1002.0],
    }
    assert renders[1005]["frames_needed"] == {
        "Source": [1002.0, 1006.0],
        "Mask": [1002.0, 1006.0],
        "Reference": [1002.0, 1002.0],
    }
    assert sorted({f for c, f in renders[1005]["fetched"] if c == "Source"}) == [
        1002.0,
        1003.0,
        1004.0,
        1005.0,
        1006.0,
    ]
    # The block's second frame: its own Source and Mask, the reference (its hash keys the window), the Output.
    assert sorted(renders[1006]["fetched"]) == [
        ["Mask", 1006.0],
        ["Output", 1006.0],
        ["Reference", 1002.0],
        ["Source", 1006.0],
    ]
    fills = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(f["frames"], f["references"], f["reference_wins"]) for f in fills] == [
        (4, [1], False),
        (5, [0], False),
    ]
    options = {"weights": data["weights"], "device": "cpu"}
    inside = inpaint(plate[0:4], matte[0:4], references={1: reference}, **options)
    np.testing.assert_allclose(read_exr(str(run_dir / "out.1003.exr")), inside[2], rtol=0, atol=1e-5)
    after = inpaint(plate[1:6], matte[1:6], references={0: reference}, **options)
    for t in (1005, 1006):
        out = read_exr(str(run_dir / f"out.{t}.exr"))
        np.testing.assert_allclose(out, after[t - 1002], rtol=0, atol=1e-5)
        keep = matte[t - FIRST] == 0
        assert np.array_equal(out[keep], plate[t - FIRST][keep]), "pixels outside the matte must be bit-exact"
    # the CLI on the files of the frames sent (1002-1006) and the cleaned frame gives the same pixels
    sent = tmp_path / "sent"
    sent.mkdir()
    plate_files, matte_files = write_plates(sent, 1002, plate[1:6], matte[1:6])
    clean = write_reference(tmp_path, 1002, reference) % 1002
    argv = [
        "inpaint",
        plate_files,
        "-m",
        matte_files,
        "-o",
        str(tmp_path / "cli.%d.exr"),
        "-R",
        f"1002={clean}",
    ]
    assert cli_main([*argv, "-w", data["weights"], "-d", "cpu", "-p", "none"]) == 0
    for t in (1005, 1006):
        cli = read_exr(str(tmp_path / f"cli.{t}.exr"))
        np.testing.assert_allclose(read_exr(str(run_dir / f"out.{t}.exr")), cli, rtol=0, atol=1e-5)
    # the painted colour reached the block after it (the same frames without the reference differ)
    without = inpaint(plate[1:6], matte[1:6], **options)
    hole = matte[1005 - FIRST] > 0
    assert np.abs(after[3][hole] - without[3][hole]).max() > 0.05
    stats = ServeClient(run_dir / "run" / "serve.sock", timeout=10).ping()["stats"]
    assert stats["computed"] == 2 and stats["lookup_hits"] == 1, stats


def test_reference_wins_and_a_repainted_reference(
    binary: Path, data: dict[str, Any], run_dir: Path, tmp_path: Path
) -> None:
    """ "Reference wins" reaches the engine as reference_wins; a reference painted again upstream is a
    new window (the server's record of the old one is not used), though the rendered frame is the same."""
    from combcn import inpaint

    plate, matte = data["plate"], data["matte"]
    reference = painted_reference(plate, matte, 1)
    job = base_job(
        data,
        reference=write_reference(tmp_path, 1002, reference),
        render=[1005, 1005],
        edits=[{"before": 1, "clip": "Reference", "frame": 1002, "add": 0.3}],
        out=str(run_dir / "out.%d.exr"),
        set_params={"referenceFrames": " 1002, ", "referenceWins": 1},
    )
    result = run_host(job, run_dir, host_env(run_dir))
    assert [r["status"] for r in result["renders"]] == [OK, OK], result["messages"]
    assert result["violations"] == []
    repainted = reference.copy()
    repainted[..., :3] += np.float32(0.3)
    expected = inpaint(
        plate[1:6],
        matte[1:6],
        references={0: repainted},
        reference_wins=True,
        weights=data["weights"],
        device="cpu",
    )
    np.testing.assert_allclose(read_exr(str(run_dir / "out.1005.exr")), expected[3], rtol=0, atol=1e-5)
    stats = ServeClient(run_dir / "run" / "serve.sock", timeout=10).ping()["stats"]
    assert stats["computed"] == 2 and stats["lookup_hits"] == 0, stats


def test_reference_errors_are_reported_before_anything_is_sent(
    binary: Path, data: dict[str, Any], run_dir: Path, tmp_path: Path
) -> None:
    """Frames named without a Reference clip, a connected clip with no frames named, a frame outside the
    Source, text that is no frame number, a Reference of another size, a frame the Reference clip
    lacks and a reference too far from the block: each render fails with one message, writes no pixel
    and starts no server."""
    plate, matte = data["plate"], data["matte"]
    reference = write_reference(tmp_path, 1002, painted_reference(plate, matte, 1))
    small = tmp_path / "small"
    small.mkdir()
    small_reference = write_reference(small, 1002, painted_reference(plate, matte, 1)[:16, :24])
    cases = [
        (None, "1002", "Reference clip is not connected"),
        (reference, "", "Reference frames is empty"),
        (reference, "990", "Reference frame 990 is outside the Source's frames 1001-1006"),
        (reference, "1002,10x2", "'10x2' is not a frame number"),
        (
            small_reference,
            "1002",
            "the Reference image at frame 1002 is 24x16 at (0, 0), the Source's frame is 48x32",
        ),
        (reference, "1003", "the Reference clip has no image at frame 1003"),
        # a clip of 1001-2100 (frames after 1006 absent): from 1001 to 2030 is over 1024 frames
        (reference, "1002,2030", "Reference frame 2030 is too far from frames 1001-1004"),
    ]
    env = host_env(run_dir, COMBCN_SERVE="/bin/false")  # a server start would fail with another message
    for clip, frames, expect in cases:
        job = base_job(data, reference=clip, render=[1002], set_params={"referenceFrames": frames})
        if "too far" in expect:
            absent = list(range(LAST + 1, 2101))
            job.update(last=2100, missing={"Source": absent, "Mask": absent})
        result = run_host(job, run_dir, env)
        (render,) = result["renders"]
        assert render["status"] == FAILED, (frames, expect)
        (message,) = result["messages"]
        assert message["type"] == "OfxMessageError" and expect in message["text"], (expect, message["text"])
        assert not render["output_written"], "a failed render must leave the Output untouched"
        assert {f for c, f in render["fetched"] if c == "Source"} == {1002.0}, render["fetched"]
        assert result["violations"] == []
