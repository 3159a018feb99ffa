"""Build combcn with its native masked_conv3d op compiled ahead of time (metadata: pyproject.toml).

``pip wheel .`` and ``pip install .`` compile ``native/ops`` with torch's C++ extension build into
``combcn/ops/_C.so``: the CPU kernel always, the CUDA kernel too where torch has CUDA and a CUDA
toolkit is found. ``combcn/ops/_C.json`` beside it records the torch it was built against; combcn
loads the library only with that torch, and the wheel requires that torch release (as torchvision's
wheels do). Build with ``--no-build-isolation`` to compile against the torch of the environment you
will run in; an isolated build compiles against the newest torch pip finds, and installing its wheel
brings that torch along.

Editable installs (``pip install -e .``, ``install/setup.sh``) compile nothing here: in a checkout the
op is JIT-built from ``native/ops`` on first use, or by ``python -m combcn.ops.build``.

A missing C++ compiler or a failed compile fails the build with a message that says so. To build a
pure-Python wheel instead, set ``COMBCN_BUILD_NATIVE=0``: combcn then warns at run time and uses its
pure-PyTorch reference (much slower), and ``combcn info`` says why.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

from setuptools import setup

# combcn's requirements, torch aside (pyproject.toml declares them dynamic, for the torch pin below).
REQUIREMENTS = [
    "numpy>=1.24",
    "OpenImageIO>=3.0",
    "av>=12",
    "pyyaml>=6",
    "tqdm>=4.60",
    "ninja>=1.11",
    "opencv-python-headless>=4.8",
    "matplotlib>=3.7",
]
TORCH = "torch>=2.13"

ROOT = Path(__file__).resolve().parent
NATIVE = Path("native") / "ops"  # relative: setuptools wants source paths relative to setup.py


def say(message: str) -> None:
    print(f"combcn build: {message}", file=sys.stderr, flush=True)


def loud(*lines: str) -> str:
    """A framed message that stands out in pip's build log."""
    bar = "*" * 78
    return "\n".join(["", bar, *(f"combcn build: {line}" for line in lines), bar, ""])


PURE_PYTHON_HINT = (
    "Set COMBCN_BUILD_NATIVE=0 to build a pure-Python combcn that uses the (much slower) "
    "pure-PyTorch reference instead."
)


def load_build_flags():
    """combcn/ops/build.py, loaded by path: the compiler flags shared with the JIT build."""
    spec = importlib.util.spec_from_file_location("combcn_build_flags", ROOT / "combcn" / "ops" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def native_sources(with_cuda: bool) -> list[str]:
    """Every translation unit of the op: native/ops/*.cpp, cpu/*.cpp, and cuda/*.cpp|*.cu with CUDA."""
    patterns = ["*.cpp", "cpu/*.cpp"] + (["cuda/*.cpp", "cuda/*.cu"] if with_cuda else [])
    found = [path for pattern in patterns for path in sorted((ROOT / NATIVE).glob(pattern))]
    return [str(path.relative_to(ROOT)) for path in found]


def native_extensions() -> tuple[list, dict]:
    """(ext_modules, cmdclass) for setup(): the op, or nothing when COMBCN_BUILD_NATIVE=0."""
    if os.environ.get("COMBCN_BUILD_NATIVE", "1") == "0":
        print(
            loud(
                "COMBCN_BUILD_NATIVE=0: building a pure-Python combcn WITHOUT the native masked_conv3d op.",
                "combcn will warn and use its pure-PyTorch reference (much slower); `combcn info` says so.",
            ),
            file=sys.stderr,
        )
        return [], {}
    try:
        import torch
    except ImportError as exc:
        message = loud(
            f"torch is not importable here ({exc}); the native op is compiled against torch.",
            "Install torch, then build with `pip wheel . --no-build-isolation`.",
            PURE_PYTHON_HINT,
        )
        raise SystemExit(message) from exc

    flags = load_build_flags()
    with_cuda = flags.torch_has_cuda()
    if with_cuda:
        flags.prepare_cuda_env()  # before cpp_extension is imported: it reads CUDA_HOME on import
    from torch.utils import cpp_extension

    if with_cuda and cpp_extension.CUDA_HOME is None:
        message = loud(
            f"torch {torch.__version__} has CUDA {torch.version.cuda} but no CUDA toolkit (nvcc) was found:",
            "building the CPU op only; CUDA tensors will use the pure-PyTorch reference (slower).",
            "Set CUDA_HOME to a CUDA toolkit to build the CUDA op as well.",
        )
        print(message, file=sys.stderr)
        with_cuda = False
    make = cpp_extension.CUDAExtension if with_cuda else cpp_extension.CppExtension
    extension = make(
        f"combcn.ops.{flags.PREBUILT_NAME}",  # where combcn.ops._ext looks for it
        native_sources(with_cuda),
        include_dirs=[str(ROOT / NATIVE)],
        # -g0: the interpreter's CFLAGS carry -g, which would ship ~5 MB of debug info in the wheel.
        extra_compile_args={"cxx": [*flags.cxx_flags(with_cuda), "-g0"], "nvcc": flags.nvcc_flags()},
        extra_link_args=flags.openmp_flags(),
    )
    record = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda if with_cuda else None,
        "with_cuda": with_cuda,
        "sources_sha256": flags.sources_digest(ROOT / NATIVE),
    }
    # _C.so, not _C.cpython-311-...so: a library torch loads (torch.ops.load_library), not a module.
    base = cpp_extension.BuildExtension.with_options(no_python_abi_suffix=True)
    return [extension], {"build_ext": build_native_op(base, record)}


def build_native_op(base: type, record: dict) -> type:
    """torch's BuildExtension that says what it does, fails loudly and writes the build record."""

    class BuildNativeOp(base):  # type: ignore[misc, valid-type]
        def run(self) -> None:
            if getattr(self, "editable_mode", False):
                say("editable install: the native op is JIT-built from native/ops on first use")
                return
            compiler = shlex.split(os.environ.get("CXX", "c++"))[0]
            if shutil.which(compiler) is None:
                raise SystemExit(
                    loud(
                        f"no C++ compiler: `{compiler}` is not on PATH (set CXX, or install one, e.g. g++);",
                        "the native masked_conv3d op cannot be built.",
                        PURE_PYTHON_HINT,
                    )
                )
            what = "CPU + CUDA" if record["with_cuda"] else "CPU"
            say(f"compiling the native masked_conv3d op ({what}) against torch {record['torch']}")
            try:
                super().run()
            except Exception as exc:
                message = loud(
                    f"compiling the native masked_conv3d op failed: {exc}",
                    "The compiler's messages are above.",
                    PURE_PYTHON_HINT,
                )
                raise SystemExit(message) from exc
            (extension,) = self.extensions
            library = Path(self.get_ext_fullpath(extension.name))
            library.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
            say(f"built {library.name} and its build record {library.with_suffix('.json').name}")

        def build_extensions(self) -> None:
            # cuda/masked_conv3d_cuda.cpp and .cu share a stem, hence an object name: the .cu one gets
            # its own (.cuda.o), as in torch's JIT build.
            plain = self.compiler.object_filenames

            def object_filenames(sources, strip_dir=0, output_dir=""):  # type: ignore[no-untyped-def]
                names = plain(sources, strip_dir, output_dir)
                return [
                    "{}.cuda{}".format(*os.path.splitext(name)) if str(source).endswith(".cu") else name
                    for source, name in zip(sources, names, strict=True)
                ]

            self.compiler.object_filenames = object_filenames
            super().build_extensions()

        def get_export_symbols(self, ext) -> list[str]:
            return []  # no PyInit__C: the library registers ops with torch, it is never imported

    return BuildNativeOp


def torch_requirement(ext_modules: list) -> str:
    """``torch==<the release the op is compiled against>``, as torchvision pins it, or ``TORCH``."""
    if not ext_modules:
        return TORCH
    import torch

    return f"torch=={torch.__version__.split('+')[0]}"  # ==2.13.0 also admits 2.13.0+cpu, 2.13.0+cu128


if __name__ == "__main__":  # pip and build run setup.py as __main__; tests import its helpers
    ext_modules, cmdclass = native_extensions()
    setup(
        install_requires=[torch_requirement(ext_modules), *REQUIREMENTS],
        ext_modules=ext_modules,
        cmdclass=cmdclass,
    )
