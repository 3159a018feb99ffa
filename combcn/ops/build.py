"""How the native masked_conv3d op is compiled, and ``python -m combcn.ops.build``.

Two builds share the flags below: ``setup.py`` compiles the op ahead of time into the wheel
(``combcn/ops/_C.so``, with ``_C.json`` recording the torch it was built against), and
:mod:`combcn.ops._ext` JIT-builds it from ``native/ops`` in a source checkout (editable installs).
This module imports nothing of combcn at import time, so ``setup.py`` can load it by path before
combcn is installed.

``python -m combcn.ops.build`` builds (or confirms the cache of) the op for this process: exit status 0
when the native op loads, 1 otherwise (``install/setup.sh`` then warns and carries on with the
pure-PyTorch reference).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

# The name of the ahead-of-time build inside the package (combcn/ops/_C.so) and its build record.
PREBUILT_NAME = "_C"


# What counts as the op's source: a prebuilt library records their digest, a checkout compares it.
SOURCE_SUFFIXES = (".cpp", ".h", ".cu", ".cuh")


def sources_digest(root: Path) -> str:
    """SHA-256 over the relative paths and contents of every source and header under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in SOURCE_SUFFIXES):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def torch_has_cuda() -> bool:
    """Whether this torch build has CUDA (only then can ``.cu`` sources be built)."""
    import torch

    return bool(torch.cuda._is_compiled() and torch.version.cuda)


def openmp_flags() -> list[str]:
    """``-fopenmp`` on Linux when torch has OpenMP, for both compiling and linking."""
    import torch

    # at::parallel_for is a header template: compiled without OpenMP it runs serially. Linux torch wheels
    # ship libgomp.so.1 and load it first, so the extension's libgomp.so.1 resolves to that same runtime
    # (one thread pool, sized by torch.set_num_threads).
    return ["-fopenmp"] if sys.platform.startswith("linux") and torch.backends.openmp.is_available() else []


def cxx_flags(with_cuda: bool) -> list[str]:
    """Flags for the C++ compiler (the host compiler too, for ``.cu`` files)."""
    # -ffp-contract=off: the AVX-512 row kernels (native/ops/cpu/simd.h) must round like the scalar loops.
    flags = ["-O3", "-ffp-contract=off", "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE"]
    flags += ["-DCOMBCN_WITH_CUDA"] if with_cuda else []
    return flags + openmp_flags()


def nvcc_flags() -> list[str]:
    """Flags for nvcc."""
    return ["-O3", "--expt-relaxed-constexpr"]


def prepare_cuda_env() -> None:
    """Point torch's CUDA build at the toolkit and the architectures when the environment does not."""
    # /usr/local/bin/nvcc may be a wrapper script, which misleads CUDA_HOME detection.
    if "CUDA_HOME" not in os.environ and Path("/usr/local/cuda/bin/nvcc").is_file():
        os.environ["CUDA_HOME"] = "/usr/local/cuda"
    if "TORCH_CUDA_ARCH_LIST" not in os.environ:
        import torch

        if not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"  # nothing to detect the arch from


def main(argv: list[str] | None = None) -> int:
    from combcn.ops import _ext

    parser = argparse.ArgumentParser(
        prog="python -m combcn.ops.build",
        description="Build (or confirm the cache of) the native masked_conv3d op.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show the compiler commands (default: off)"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    print("combcn: loading the native op (a JIT build takes ~30 s the first time)", file=sys.stderr)
    ok = _ext.load(verbose=args.verbose, warn=False)
    st = _ext.state()
    if not ok:
        print(f"combcn: native op not available: {st['error']}", file=sys.stderr)
        return 1
    what = "cpu + cuda" if st["cuda"] else "cpu"
    print(
        f"combcn: native op ready ({what}, {_ext.describe_source(st)}) in {time.perf_counter() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
