"""CUDA side of ``combcn.ops.masked_conv3d``.

- ``test_nvcc_compile_check`` compiles every ``.cu`` of ``native/ops`` for sm_80 and sm_90 with nvcc
  (no GPU needed) and syntax-checks the ATen glue ``.cpp`` against the installed torch headers;
  it skips only where nvcc is absent and fails when a compile fails.
- ``test_emulated_cuda_kernels`` runs the kernels of ``masked_conv3d_kernels.cuh`` on the CPU
  (``tests/test_ops_cuda_emulation.cpp``: g++, one std::thread per CUDA thread) against the
  reference, so their indexing and epilogue are tested here too; it needs g++ and the CUDA headers.
- The runtime tests (marker ``cuda``) compare the CUDA kernels with the float64 reference; they
  skip only where no CUDA GPU is visible.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from combcn.ops import EPS, _ext, backends, masked_conv3d

sys.path.insert(0, str(Path(__file__).parent))
from test_ops import assert_close, case, reference64  # noqa: E402

NATIVE = Path(__file__).resolve().parents[1] / "native" / "ops"
ARCHS = ("80", "90")


def find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    candidate = Path(home) / "bin" / "nvcc"
    return str(candidate) if candidate.is_file() else None


def torch_includes() -> list[str]:
    root = Path(torch.__file__).parent / "include"
    return ["-isystem", str(root), "-isystem", str(root / "torch" / "csrc" / "api" / "include")]


def cuda_include_dir() -> Path | None:
    """The CUDA toolkit's include directory (holding cuda_runtime.h), if installed."""
    nvcc = find_nvcc()
    homes = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"]
    if nvcc is not None:
        homes.insert(1, str(Path(nvcc).resolve().parents[1]))
    return next(
        (Path(h) / "include" for h in homes if h and (Path(h) / "include" / "cuda_runtime.h").is_file()), None
    )


def test_nvcc_compile_check(tmp_path: Path) -> None:
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (set CUDA_HOME): the CUDA compile-check needs the CUDA toolkit")
    # /usr/local/bin/nvcc may be a wrapper script: look for the headers next to the toolkit too.
    homes = [os.environ.get("CUDA_HOME", ""), str(Path(nvcc).resolve().parents[1]), "/usr/local/cuda"]
    cuda_include = next(
        (Path(h) / "include" for h in homes if h and (Path(h) / "include" / "cuda_runtime.h").is_file()), None
    )
    jobs: list[tuple[str, subprocess.Popen[str]]] = []
    for source in sorted(NATIVE.rglob("*.cu")):
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
        cmd = [
            nvcc, "-c", str(source), "-o", str(tmp_path / (source.stem + ".o")), "-std=c++20", "-O3",
            "-Xcompiler", "-fPIC", "--expt-relaxed-constexpr", *gencode, "-I", str(NATIVE),
            "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
            "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__",
        ]  # fmt: skip
        jobs.append(
            (str(source), subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        )
    assert jobs, f"no .cu files under {NATIVE}"
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is not None and cuda_include is not None:
        # The host glue is never built on a CPU-only torch: check it compiles against torch's headers.
        for source in sorted((NATIVE / "cuda").glob("*.cpp")):
            cmd = [
                cxx, "-fsyntax-only", "-std=c++20", *torch_includes(), "-isystem", str(cuda_include),
                "-isystem", sysconfig.get_paths()["include"], "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE",
                "-DCOMBCN_WITH_CUDA", "-I", str(NATIVE), str(source),
            ]  # fmt: skip
            jobs.append(
                (
                    str(source),
                    subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
                )
            )
    failures = []
    for source, proc in jobs:
        output, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failures.append(f"{source}:\n{output[-3000:]}")
    assert not failures, "\n".join(failures)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")


@pytest.fixture(scope="module")
def native_cuda() -> bool:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible")
    ok = _ext.load()
    assert ok and backends()["cuda"]["active"], f"CUDA native op not built: {_ext.state()['error']}"
    return True


def to_cuda(*tensors):
    return tuple(None if t is None else t.cuda() for t in tensors)


@pytest.mark.cuda
@cuda
class TestMaskedConv3dCuda:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
    @pytest.mark.parametrize(
        ("c_in", "k", "stride", "dilation"),
        [(4, 5, 1, 1), (3, 3, 2, 1), (8, 3, 1, 2), (8, 3, 1, 4), (8, 3, 2, 8), (16, 3, 1, 1), (16, 5, 1, 1)],
    )
    def test_against_reference(self, native_cuda, dtype, c_in, k, stride, dilation) -> None:
        # c_in <= 4 runs the direct kernel; larger c_in the cuDNN conv + fused count/epilogue kernel.
        st, dil = (1, stride, stride), (1, dilation, dilation)
        pad = ((k - 1) // 2, dilation * (k - 1) // 2, dilation * (k - 1) // 2)
        for kind in ("random", "all_valid", "all_hole", "single_pixel", "hole_blocks"):
            x, mask, weight, bias = case(c_in=c_in, c_out=20, k=k, shape=(2, 5, 16, 14), dtype=dtype,
                                         mask_kind=kind)  # fmt: skip
            bn = (torch.rand(20, dtype=dtype) + 0.5, torch.randn(20, dtype=dtype))
            ref, ref_mask = reference64(x, mask, weight, bias, st, pad, dil, bn, "relu")
            xc, mc, wc, bc = to_cuda(x, mask, weight, bias)
            out, new_mask = masked_conv3d(xc, mc, wc, bc, st, pad, dil, bn=to_cuda(*bn), activation="relu")
            assert out.is_cuda and out.dtype == dtype
            assert_close(out.cpu(), ref, dtype)
            torch.testing.assert_close(new_mask.cpu().double(), ref_mask)

    def test_batch_zero_and_noncontiguous(self, native_cuda) -> None:
        x, mask, weight, bias = to_cuda(*case(c_in=6, shape=(2, 4, 10, 12)))
        out, _ = masked_conv3d(x[:0], mask[:0], weight, bias, 1, "same", 2)
        assert out.shape == (0, 5, 4, 10, 12)
        ref, _ = reference64(x.cpu(), mask.cpu(), weight.cpu(), bias.cpu(), (1, 1, 1), (1, 1, 1), (1, 1, 1))
        for xi in (
            x.contiguous(memory_format=torch.channels_last_3d),
            x.transpose(3, 4).contiguous().transpose(3, 4),
        ):
            out, _ = masked_conv3d(xi, mask, weight, bias, 1, 1, 1)
            assert_close(out.cpu(), ref, torch.float32)

    def test_gradcheck(self, native_cuda) -> None:
        for c_in in (2, 6):  # direct kernel and cuDNN path
            x, mask, weight, bias = to_cuda(
                *case(c_in=c_in, c_out=3, shape=(1, 3, 5, 4), dtype=torch.float64)
            )
            assert torch.autograd.gradcheck(
                lambda x, w, b, m=mask: masked_conv3d(x, m, w, b, 1, "same", (1, 2, 2), activation="relu")[0],
                tuple(t.requires_grad_(True) for t in (x, weight, bias)),
                fast_mode=True,
            )

    def test_opcheck(self, native_cuda) -> None:
        x, mask, weight, bias = to_cuda(*case(c_in=3, c_out=4, shape=(1, 3, 6, 5)))
        for c_in_x in (x, torch.cat([x, x], 1)):
            w = weight if c_in_x.shape[1] == 3 else torch.cat([weight, weight], 1)
            args = (c_in_x, mask, w.requires_grad_(True), bias, None, None, [1, 1, 1], [1, 1, 1], [1, 1, 1],
                    "relu", EPS)  # fmt: skip
            torch.library.opcheck(torch.ops.combcn.masked_conv3d.default, args)


# --- The CUDA kernels themselves, run on the CPU (no GPU needed) --------------------------------

GEOMETRY_FIELDS = 21


@pytest.fixture(scope="module")
def emulation(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    """tests/test_ops_cuda_emulation.cpp built with g++: the .cuh kernels, a std::thread per CUDA thread."""
    cxx = shutil.which("c++") or shutil.which("g++")
    include = cuda_include_dir()
    if cxx is None or include is None:
        pytest.skip("needs a C++ compiler and the CUDA toolkit headers (cuda_runtime.h)")
    library = tmp_path_factory.mktemp("cuda_emulation") / "emulation.so"
    source = Path(__file__).with_name("test_ops_cuda_emulation.cpp")
    cmd = [cxx, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-isystem", str(include),
           "-I", str(NATIVE), str(source), "-o", str(library)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return ctypes.CDLL(str(library))


def geometry(x, weight, stride, padding, dilation, out_size) -> torch.Tensor:
    values = [*x.shape, weight.shape[0], *out_size, *weight.shape[2:], *stride, *padding, *dilation]
    assert len(values) == GEOMETRY_FIELDS
    return torch.tensor(values, dtype=torch.int64)


def coefficients(bias, scale, shift) -> torch.Tensor:
    """[3, C_out] float32: scale, scale * bias + shift, relu(shift) (as epilogue_coefficients in C++)."""
    return torch.stack([scale, scale * bias + shift, torch.relu(shift)]).float().contiguous()


def ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


EMULATED_CASES = [(3, (1, 1, 1), 2, 6), (3, (1, 2, 2), 1, 6), (5, (1, 1, 1), 1, 3), (3, (1, 1, 1), 8, 4),
                  (3, (1, 2, 2), 4, 2)]  # fmt: skip


DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}  # combcn::cuda::Dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("k", "stride", "dilation", "c_in"), EMULATED_CASES)
def test_emulated_cuda_kernels(emulation: ctypes.CDLL, k, stride, dilation, c_in, dtype) -> None:
    """Both CUDA kernels, run on the CPU, against the float64 reference: count + epilogue in place over
    a convolution output (the cuDNN path), and the direct kernel on a non-contiguous input."""
    dil = (1, dilation, dilation)
    pad = ((k - 1) // 2, dilation * (k - 1) // 2, dilation * (k - 1) // 2)
    code = DTYPE_CODES[dtype]
    kinds = ("random", "all_hole", "single_pixel", "hole_blocks", "all_valid")
    for seed, kind in enumerate(kinds if dtype == torch.float32 else kinds[:1]):
        x, mask, weight, bias = case(
            c_in=c_in, c_out=20, k=k, shape=(1, 3, 7, 6), seed=seed, mask_kind=kind, dtype=dtype
        )
        scale, shift = torch.rand(20).to(dtype), torch.randn(20).to(dtype)
        ref, ref_mask = reference64(x, mask, weight, bias, stride, pad, dil, (scale, shift), "relu")
        out_size = ref.shape[2:]
        geom = geometry(x, weight, stride, pad, dil, out_size)
        coeffs = coefficients(bias.float(), scale.float(), shift.float())
        mask_c = mask.contiguous()
        # cuDNN path: NDHWC conv output (rounded to dtype), epilogue in place as in the CUDA glue.
        conv = torch.nn.functional.conv3d((x * mask).double(), weight.double(), None, stride, pad, dil).to(
            dtype
        )
        buffer = conv.permute(0, 2, 3, 4, 1).contiguous()
        new_mask = torch.full((1, 1, *out_size), -1.0).to(dtype)
        args = (buffer, buffer, new_mask, mask_c, coeffs, geom)
        assert emulation.emulate_count_epilogue(code, *(ptr(t) for t in args), 1, ctypes.c_double(EPS)) == 0
        assert_close(buffer.permute(0, 4, 1, 2, 3), ref, dtype)
        torch.testing.assert_close(new_mask.double(), ref_mask)
        # Direct kernel: any input strides (here a transposed H/W layout), two output-channel tiles.
        x_strided = x.transpose(3, 4).contiguous().transpose(3, 4)
        strides = torch.tensor(x_strided.stride(), dtype=torch.int64)
        direct = torch.full((1, *out_size, 20), float("nan")).to(dtype)
        new_mask = torch.full((1, 1, *out_size), -1.0).to(dtype)
        args = (x_strided, strides, mask_c, weight.contiguous(), coeffs, direct, new_mask, geom)
        assert emulation.emulate_direct_small_cin(code, *(ptr(t) for t in args), 1, ctypes.c_double(EPS)) == 0
        assert_close(direct.permute(0, 4, 1, 2, 3), ref, dtype)
        torch.testing.assert_close(new_mask.double(), ref_mask)
