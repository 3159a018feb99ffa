"""Shared set-up for the OpenFX and serve tests: the bundle build, tiny weights, EXR sequences."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ofx_host.host import write_exr

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
BUILD = REPO / "build" / "ofx-test"
BUNDLE = BUILD / "CombCN.ofx.bundle"
BINARY = BUNDLE / "Contents" / "Linux-x86-64" / "CombCN.ofx"
COMBCN = Path(sys.executable).parent / "combcn"


def build_bundle() -> Path:
    """Configure and build the root CMakeLists.txt into build/ofx-test (incremental; locked)."""
    BUILD.mkdir(parents=True, exist_ok=True)
    with open(BUILD.parent / "ofx-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel pytest runs share the build dir
        for cmd in (
            ["cmake", "-S", str(REPO), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release"],
            ["cmake", "--build", str(BUILD), "-j", "2"],
        ):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return BINARY


def tiny_weights(path: Path) -> Path:
    """A weights file of a tiny randomly initialised model (seeded): fast and deterministic."""
    import torch

    from combcn.model import Inpainter, ModelConfig, save_weights

    torch.manual_seed(0)
    model = Inpainter(ModelConfig(width=0.0625, window=4, resolution=32)).eval()
    return save_weights(model, path)


def plate_and_matte(
    first: int, last: int, height: int = 32, width: int = 48
) -> tuple[np.ndarray, np.ndarray]:
    """Plate float32 (T, H, W, 4) with scene-linear values above 1 and alpha 1, and a moving box
    matte float32 (T, H, W): a different frame for every time."""
    rng = np.random.default_rng(7)
    t = last - first + 1
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    plate = np.empty((t, height, width, 4), np.float32)
    matte = np.zeros((t, height, width), np.float32)
    for i in range(t):
        base = 0.2 + 0.5 * np.sin((x + 2 * i) / 6.0) ** 2 + 0.3 * (y / height)
        plate[i, ..., 0] = base * 1.8
        plate[i, ..., 1] = base
        plate[i, ..., 2] = 0.5 * base + 0.05 * rng.random((height, width), dtype=np.float32)
        plate[i, ..., 3] = 1.0
        matte[i, 10:18, 12 + i : 24 + i] = 1.0
    return plate, matte


def write_plates(folder: Path, first: int, plate: np.ndarray, matte: np.ndarray) -> tuple[str, str]:
    """Real EXR files through OpenImageIO: plate.<f>.exr (RGBA) and matte.<f>.exr (one channel)."""
    for i in range(plate.shape[0]):
        write_exr(str(folder / f"plate.{first + i}.exr"), plate[i])
        write_exr(str(folder / f"matte.{first + i}.exr"), matte[i][..., None])
    return str(folder / "plate.%d.exr"), str(folder / "matte.%d.exr")


@contextlib.contextmanager
def private_run_dir() -> Iterator[Path]:
    """A short, private (0700) directory for the socket: Unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="ccn-"))
    os.chmod(path, 0o700)
    try:
        yield path
    finally:
        stop_servers(path)
        shutil.rmtree(path, ignore_errors=True)


def stop_servers(run_dir: Path) -> None:
    """Stop any server on run_dir/run/serve.sock (asks politely, then kills the pid it reports)."""
    from combcn.serve.client import ServeClient

    sock = run_dir / "run" / "serve.sock"
    if not sock.exists():
        return
    with contextlib.suppress(Exception):
        pid = ServeClient(sock, timeout=5).ping()["pid"]
        ServeClient(sock, timeout=5).shutdown()
        for _ in range(50):
            if not sock.exists():
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


def host_env(run_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        COMBCN_SERVE_SOCKET=str(run_dir / "run" / "serve.sock"),
        COMBCN_SERVE=str(COMBCN),
        COMBCN_SERVE_IDLE="60",
        PYTHONPATH=str(TESTS),
        COMBCN_SERVE_PYTHONPATH=str(TESTS),  # the plugin drops PYTHONPATH from the server it starts
        OMP_NUM_THREADS="1",
    )
    env.pop("COMBCN_PYTHON", None)
    env.update(extra)
    return env


def run_host(job: dict[str, Any], run_dir: Path, env: dict[str, str], timeout: float = 120) -> dict[str, Any]:
    """Run the test host in a subprocess (a plugin crash shows as a signal, not a dead pytest)."""
    job = {"binary": str(BINARY), "bundle": str(BUNDLE), "result": str(run_dir / "result.json"), **job}
    job_path = run_dir / "job.json"
    job_path.write_text(json.dumps(job))
    proc = subprocess.run(
        [sys.executable, "-m", "ofx_host", str(job_path)],
        env=env,
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"test host exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    )
    result: dict[str, Any] = json.loads((run_dir / "result.json").read_text())
    result["stderr"] = proc.stderr
    return result
