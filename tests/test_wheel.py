"""What a pip user gets: a wheel that carries the compiled op, and honest reports of where the op came from.

The slow tests build real wheels from a copy of this checkout (``pip wheel . --no-build-isolation``)
and install them into fresh virtual environments outside it. Those environments borrow torch, numpy,
OpenImageIO and the rest from this checkout's environment through a ``.pth`` line (no network, no big
installs), but combcn itself comes from the wheel: the tests check ``combcn.__file__``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from combcn.ops import _ext

REPO = Path(__file__).resolve().parents[1]
# What a copy of the checkout leaves out: environments, build outputs, caches, run outputs.
NOT_SOURCE = (".git", ".venv", "build", "out", "runs", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis")
NOT_SOURCE += ("*.so", "*.o", "gpu_check_out")


def load_setup_py() -> Any:
    spec = importlib.util.spec_from_file_location("combcn_setup", REPO / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # its setup() call runs only as __main__
    return module


def fresh_state() -> dict[str, Any]:
    keys = ("tried", "loaded", "cuda", "error", "path", "source", "note")
    return {key: (False if key in ("tried", "loaded", "cuda") else None) for key in keys}


class TestSources:
    def test_setup_compiles_what_the_jit_build_compiles(self) -> None:
        setup_py = load_setup_py()
        for with_cuda in (False, True):
            wheel_sources = {REPO / name for name in setup_py.native_sources(with_cuda)}
            assert wheel_sources == set(_ext.sources(with_cuda)), with_cuda

    def test_sources_digest_follows_the_sources(self, tmp_path: Path) -> None:
        from combcn.ops import build

        tree = tmp_path / "ops"
        shutil.copytree(_ext.SOURCE_ROOT, tree)
        before = build.sources_digest(tree)
        assert before == build.sources_digest(_ext.SOURCE_ROOT)
        (tree / "cpu" / "simd.h").write_text((tree / "cpu" / "simd.h").read_text() + "\n// changed\n")
        assert build.sources_digest(tree) != before


class TestPrebuiltLoad:
    """The checks that keep a prebuilt library from a torch (or source tree) it was not built for."""

    def record(self, tmp_path: Path, **fields: Any) -> Path:
        from combcn.ops import build

        library = tmp_path / "_C.so"
        library.write_bytes(b"not a library")  # never loaded: every case stops before loading
        record = {
            "torch": torch.__version__,
            "cuda": None,
            "with_cuda": False,
            "sources_sha256": build.sources_digest(_ext.SOURCE_ROOT),
        }
        (tmp_path / "_C.json").write_text(json.dumps({**record, **fields}))
        return library

    def test_other_torch_is_refused(self, tmp_path: Path) -> None:
        why = _ext._load_prebuilt(self.record(tmp_path, torch="1.13.1+cpu"))
        assert why is not None and "built for torch 1.13.1+cpu" in why and torch.__version__ in why

    def test_changed_sources_are_refused_in_a_checkout(self, tmp_path: Path) -> None:
        why = _ext._load_prebuilt(self.record(tmp_path, sources_sha256="0" * 64))
        assert why is not None and "changed since it was built" in why

    def test_missing_record_is_refused(self, tmp_path: Path) -> None:
        library = self.record(tmp_path)
        (tmp_path / "_C.json").unlink()
        why = _ext._load_prebuilt(library)
        assert why is not None and "_C.json" in why

    def test_unloadable_library_says_why(self, tmp_path: Path) -> None:
        why = _ext._load_prebuilt(self.record(tmp_path))  # the record fits; the bytes are no library
        assert why is not None and why.startswith(("OSError", "RuntimeError"))


class TestNoNativeOp:
    def test_install_without_prebuilt_or_sources_warns_and_says_why(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(_ext, "_state", fresh_state())
        monkeypatch.setattr(_ext, "PACKAGE_DIR", tmp_path)
        monkeypatch.setattr(_ext, "SOURCE_ROOT", tmp_path / "native" / "ops")
        monkeypatch.delenv("COMBCN_NO_EXT", raising=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert _ext.load() is False
        assert len(caught) == 1 and "no prebuilt op in this install" in str(caught[0].message)
        line = _ext.describe_source()
        assert line.startswith("reference fallback:") and "not a source checkout" in line

    def test_info_reports_the_source_of_the_op(self, capsys: pytest.CaptureFixture[str]) -> None:
        from combcn.cli import main

        assert main(["info", "--json"]) == 0
        source = json.loads(capsys.readouterr().out)["op_source"]
        st = _ext.state()
        if not st["loaded"]:  # e.g. COMBCN_NO_EXT=1: the reference, and why
            assert source["kind"] == "reference" and source["why"] == st["error"]
        else:  # in a checkout the op is JIT-built (or a prebuilt library built from these same sources)
            assert source["kind"] in ("jit", "prebuilt") and source["path"] == st["path"]
        assert main(["info"]) == 0
        assert f"op source    {source['line']}" in capsys.readouterr().out


# ---------------------------------------------------------------- real wheels in fresh environments


def copy_checkout(dest: Path) -> Path:
    """A copy of the checkout's sources, so that the build's outputs stay out of the checkout."""
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    return dest


def build_wheel(src: Path, dist: Path, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation"]
    command += ["--no-index", "-w", str(dist)]
    return subprocess.run(
        command, cwd=src, env=child_env(MAX_JOBS="2", **env), capture_output=True, text=True, timeout=900
    )


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COMBCN_NO_EXT", "COMBCN_CACHE")}
    return {**env, **extra}


def requirements(wheel: Path) -> list[str]:
    """The Requires-Dist lines of a wheel's metadata."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA")))
    prefix = "Requires-Dist: "
    return [line[len(prefix) :] for line in metadata.decode().splitlines() if line.startswith(prefix)]


def fresh_venv(where: Path, wheel: Path) -> Path:
    """A new virtual environment with ``wheel`` installed; torch and friends come from this one's."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    borrowed = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    # Appended after the fresh site-packages, so the wheel's combcn comes first; .pth files in the borrowed
    # folder (this checkout's editable install) are not processed.
    (site / "zz_borrowed_dependencies.pth").write_text("\n".join(borrowed) + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index"]
    subprocess.run([*install, str(wheel)], check=True, capture_output=True, text=True)
    return where


def combcn_in(venv: Path, *args: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "combcn"), *args],
        cwd=cwd,
        env=child_env(COMBCN_CACHE=str(cache)),
        capture_output=True,
        text=True,
        timeout=600,
    )


def read_exr(path: Path) -> tuple[np.ndarray, list[str]]:
    import OpenImageIO as oiio

    image = oiio.ImageBuf(str(path))
    assert not image.has_error, f"{path}: {image.geterror()}"
    return np.asarray(image.get_pixels(oiio.FLOAT)), list(image.spec().channelnames)


@pytest.mark.slow
def test_wheel_carries_the_compiled_op_and_inpaints(tmp_path: Path) -> None:
    # ~35 s on 2 cores, nearly all of it the compile of the C++ op.
    src = copy_checkout(tmp_path / "src")
    built = build_wheel(src, tmp_path / "dist")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("combcn-*.whl")
    assert not wheel.name.endswith("-none-any.whl"), f"{wheel.name}: a pure-Python wheel"
    names = zipfile.ZipFile(wheel).namelist()
    assert "combcn/ops/_C.so" in names and "combcn/ops/_C.json" in names, names
    assert f"torch=={torch.__version__.split('+')[0]}" in requirements(wheel), "pinned to its torch"

    venv = fresh_venv(tmp_path / "venv", wheel)
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    cache.mkdir()
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import combcn; print(combcn.__file__)"],
        cwd=work,
        env=child_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    package = Path(where.stdout.strip()).resolve().parent
    assert package.is_relative_to(venv.resolve()), f"combcn came from {package}, not the wheel"

    info_run = combcn_in(venv, "info", "--json", cwd=work, cache=cache)
    assert info_run.returncode == 0, info_run.stderr
    info = json.loads(info_run.stdout)
    assert info["op_backends"]["cpu"]["active"], info["op_backends"]
    assert not info["op_backends"]["reference"]["active"]
    assert info["op_source"]["kind"] == "prebuilt", info["op_source"]
    assert info["op_source"]["path"] == str(package / "ops" / "_C.so")
    assert list(cache.iterdir()) == [], "the op was JIT-built instead of loaded from the wheel"

    sample = package / "data" / "sample"
    out = work / "clean" / "plate.####.exr"
    render = combcn_in(
        venv,
        "inpaint",
        str(sample / "plate.####.exr"),
        "--matte",
        str(sample / "matte.####.exr"),
        "-o",
        str(out),
        "--frames",
        "1001-1002",
        "--progress",
        "none",
        cwd=work,
        cache=cache,
    )
    assert render.returncode == 0, render.stderr[-3000:]
    assert "native masked_conv3d not available" not in render.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["plate.1001.exr", "plate.1002.exr"]
    for frame in (1001, 1002):
        clean, channels = read_exr(out.parent / f"plate.{frame}.exr")
        plate, plate_channels = read_exr(sample / f"plate.{frame}.exr")
        matte, _ = read_exr(sample / f"matte.{frame}.exr")
        assert channels == plate_channels and clean.shape == plate.shape
        assert np.isfinite(clean).all()
        rgb = [channels.index(c) for c in "RGB"]
        rest = [i for i in range(len(channels)) if i not in rgb]
        hole, keep = matte[..., 0] > 0.5, matte[..., 0] == 0
        assert np.array_equal(clean[..., rest], plate[..., rest]), "channels not inpainted are kept"
        assert np.array_equal(clean[keep][:, rgb], plate[keep][:, rgb]), "pixels outside the matte are kept"
        assert not np.array_equal(clean[hole][:, rgb], plate[hole][:, rgb]), "the hole was filled"


@pytest.mark.slow
def test_pure_python_wheel_says_it_has_no_native_op(tmp_path: Path) -> None:
    src = copy_checkout(tmp_path / "src")
    built = build_wheel(src, tmp_path / "dist", COMBCN_BUILD_NATIVE="0")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("combcn-*.whl")
    assert wheel.name.endswith("-none-any.whl"), wheel.name
    assert "combcn/ops/_C.so" not in zipfile.ZipFile(wheel).namelist()
    assert "torch>=2.13" in requirements(wheel)

    venv = fresh_venv(tmp_path / "venv", wheel)
    (tmp_path / "work").mkdir()
    (tmp_path / "cache").mkdir()
    info_run = combcn_in(venv, "info", "--json", cwd=tmp_path / "work", cache=tmp_path / "cache")
    assert info_run.returncode == 0, info_run.stderr
    info = json.loads(info_run.stdout)
    assert info["op_backends"]["reference"]["active"] and not info["op_backends"]["cpu"]["active"]
    assert info["op_source"]["kind"] == "reference"
    assert "no prebuilt op in this install" in info["op_source"]["why"]


@pytest.mark.slow
def test_wheel_build_without_a_compiler_fails_and_says_so(tmp_path: Path) -> None:
    src = copy_checkout(tmp_path / "src")
    built = build_wheel(src, tmp_path / "dist", CXX=str(tmp_path / "no-such-c++"))
    assert built.returncode != 0
    assert "no C++ compiler" in built.stdout + built.stderr
    assert not any((tmp_path / "dist").glob("*.whl"))
