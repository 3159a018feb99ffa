"""CUDA side of ``combcn.ops.masked_conv3d``.

- ``test_nvcc_compile_check`` compiles every ``.cu`` of ``native/ops`` for sm_80 and sm_90 with nvcc
  (no GPU needed) and syntax-checks the ATen glue ``.cpp`` against the installed torch headers;
  it skips only where nvcc is absent and fails when a compile fails.
- ``test_emulated_cuda_kernels`` runs the kernels of ``masked_conv3d_kernels.cuh`` on the CPU
  (``tests/ops/test_ops_cuda_emulation.cpp``: g++, one std::thread per CUDA thread) against the
  reference, so their indexing and epilogue are tested here too; it needs g++ and the CUDA headers.
- ``test_emulated_*`` also run the coefficient kernel, the glue's dispatch decision and its sequence of
  kernels (``emulate_masked_conv3d``), the output size rule, float64, N > 1, every epilogue variant, the
  NaN/Inf and ReLU rules and the rounding of the convolution to the input dtype.
- The runtime tests (marker ``cuda``) compare the CUDA kernels with the float64 reference under the
  precision contract (``TOLERANCES`` in test_ops.py): both paths, four dtypes, TF32 off unless asked
  for, autocast excluded, arguments checked, memory formats; they skip only where no CUDA GPU is visible.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from combcn.ops import EPS, _ext, backends, masked_conv3d
from combcn.ops.reference import conv_output_size

sys.path.insert(0, str(Path(__file__).parent))
from test_ops import (  # noqa: E402
    TOLERANCES,
    assert_close,
    assert_same_nonfinite,
    case,
    nan_case,
    op_args,
    reference64,
    rounding_case,
)

NATIVE = Path(__file__).resolve().parents[2] / "native" / "ops"
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
    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
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

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
    @pytest.mark.parametrize("c_in", [3, 12])
    @pytest.mark.parametrize("epilogue", ["none", "bn", "relu"])
    def test_batch_and_epilogue_variants(self, native_cuda, dtype, c_in, epilogue) -> None:
        x, mask, weight, bias = case(c_in=c_in, c_out=7, shape=(3, 4, 9, 8), dtype=dtype, seed=2)
        bn = (torch.rand(7, dtype=dtype) + 0.5, torch.randn(7, dtype=dtype)) if epilogue == "bn" else None
        act = "relu" if epilogue == "relu" else "none"
        for b in (bias, None):
            ref, ref_mask = reference64(x, mask, weight, b, (1, 2, 2), (1, 2, 2), (1, 2, 2), bn, act)
            out, new_mask = masked_conv3d(
                *to_cuda(x, mask, weight, b),
                (1, 2, 2),
                "same",
                (1, 2, 2),
                bn=None if bn is None else to_cuda(*bn),
                activation=act,
            )
            assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last_3d)
            assert_close(out.cpu(), ref, dtype)
            torch.testing.assert_close(new_mask.cpu().double(), ref_mask)

    @pytest.mark.parametrize("c_in", [3, 64])
    def test_float32_is_full_float32(self, native_cuda, c_in) -> None:
        # torch's own cuDNN TF32 switch is on by default: the op must not follow it unless asked.
        x, mask, weight, bias = case(c_in=c_in, c_out=32, k=3, shape=(1, 6, 20, 20), seed=4)
        ref, _ = reference64(x, mask, weight, bias, (1, 1, 1), (1, 1, 1), (1, 1, 1))
        before = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = True
        try:
            out, _ = masked_conv3d(*to_cuda(x, mask, weight, bias), 1, 1, 1)
            assert_close(out.cpu(), ref, torch.float32)
            tf32, _ = masked_conv3d(*to_cuda(x, mask, weight, bias), 1, 1, 1, allow_tf32=True)
            assert_close(tf32.cpu(), ref, torch.float32, tf32=True)
        finally:
            torch.backends.cudnn.allow_tf32 = before

    @pytest.mark.parametrize("c_in", [3, 16])
    def test_autocast_excluded_in_direct_call(self, native_cuda, c_in) -> None:
        # A direct call on float32 tensors inside autocast computes in float32 (no half conv read as float).
        x, mask, weight, bias = case(c_in=c_in, c_out=8, shape=(1, 4, 10, 10), seed=5)
        ref, _ = reference64(x, mask, weight, bias, (1, 1, 1), (1, 1, 1), (1, 1, 1))
        for low in (torch.float16, torch.bfloat16):
            with torch.autocast("cuda", dtype=low):
                out, new_mask = torch.ops.combcn.masked_conv3d(*op_args(*to_cuda(x, mask, weight, bias)))
            assert out.dtype == torch.float32 and new_mask.dtype == torch.float32
            assert_close(out.cpu(), ref, torch.float32)
        with torch.autocast("cuda", dtype=torch.bfloat16):  # the Python function casts first, on purpose
            out, _ = masked_conv3d(*to_cuda(x, mask, weight, bias), 1, 1, 1)
        assert out.dtype == torch.bfloat16

    @pytest.mark.parametrize(
        ("change", "argument"),
        [
            (lambda a: a.update(mask=a["mask"].cpu()), "`mask`"),
            (lambda a: a.update(weight=a["weight"].cpu()), "`weight`"),
            (lambda a: a.update(bias=torch.zeros(5)), "`bias`"),
            (lambda a: a.update(bias=torch.zeros(1, device="cuda")), "`bias`"),
            (
                lambda a: a.update(scale=torch.ones(1, device="cuda"), shift=torch.ones(1, device="cuda")),
                "`bn_scale`",
            ),
            (lambda a: a.update(scale=torch.ones(5, device="cuda"), shift=torch.zeros(5)), "`bn_shift`"),
            (lambda a: a.update(x=a["x"].cpu()), "`x`|`mask`"),
            (lambda a: a.update(stride=[1, 1]), "`stride`"),
            (
                lambda a: a.update(x=a["x"][..., :1, :1], mask=a["mask"][..., :1, :1], padding=[0, 0, 0]),
                "`x`",
            ),
        ],
    )
    def test_exception_direct_call(self, native_cuda, change, argument) -> None:
        a = {
            "x": torch.randn(2, 3, 4, 6, 6, device="cuda"),
            "mask": torch.ones(2, 1, 4, 6, 6, device="cuda"),
            "weight": torch.randn(5, 3, 3, 3, 3, device="cuda"),
            "bias": None,
            "scale": None,
            "shift": None,
            "stride": [1, 1, 1],
            "padding": [1, 1, 1],
        }
        change(a)
        with pytest.raises(ValueError, match=argument):
            torch.ops.combcn.masked_conv3d(
                a["x"],
                a["mask"],
                a["weight"],
                a["bias"],
                a["scale"],
                a["shift"],
                a["stride"],
                a["padding"],
                [1, 1, 1],
                "relu",
                EPS,
            )
        torch.cuda.synchronize()  # nothing was launched on bad arguments: no sticky CUDA error either

    @pytest.mark.parametrize("c_in", [3, 12])
    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    @pytest.mark.parametrize("act", ["none", "relu"])
    def test_nan_inf(self, native_cuda, c_in, dtype, act) -> None:
        x, mask, weight, bias = nan_case(dtype, c_in=c_in)
        bn = (torch.rand(6, dtype=dtype) + 0.5, torch.randn(6, dtype=dtype))
        ref, _ = reference64(x, mask, weight, bias, (1, 1, 1), (1, 1, 1), (1, 1, 1), bn, act)
        out, _ = masked_conv3d(*to_cuda(x, mask, weight, bias), 1, 1, 1, bn=to_cuda(*bn), activation=act)
        assert_same_nonfinite(out, ref, dtype)

    @pytest.mark.parametrize("c_in", [1, 8])
    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    def test_conv_rounded_to_input_dtype(self, native_cuda, c_in, dtype) -> None:
        out, _ = masked_conv3d(*rounding_case(dtype, c_in=c_in, device="cuda"))
        assert (out == 0).all(), out.unique()

    def test_batch_zero_and_noncontiguous(self, native_cuda) -> None:
        x, mask, weight, bias = to_cuda(*case(c_in=6, shape=(2, 4, 10, 12)))
        out, _ = masked_conv3d(x[:0], mask[:0], weight, bias, 1, "same", 2)
        assert out.shape == (0, 5, 4, 10, 12)
        ref, _ = reference64(x.cpu(), mask.cpu(), weight.cpu(), bias.cpu(), (1, 1, 1), (1, 1, 1), (1, 1, 1))
        x3, w3 = x[:, :3].contiguous(), weight[:, :3].contiguous()  # the direct kernel's layouts too
        ref3, _ = reference64(x3.cpu(), mask.cpu(), w3.cpu(), bias.cpu(), (1, 1, 1), (1, 1, 1), (1, 1, 1))
        for xs, w, expected in ((x, weight, ref), (x3, w3, ref3)):
            for xi in (
                xs,
                xs.contiguous(memory_format=torch.channels_last_3d),
                xs.transpose(3, 4).contiguous().transpose(3, 4),
                torch.stack([xs, xs], 2).flatten(1, 2)[:, ::2],  # channel stride 2
            ):
                out, _ = masked_conv3d(xi, mask.expand(-1, 1, -1, -1, -1), w, bias, 1, 1, 1)
                assert out.is_contiguous(memory_format=torch.channels_last_3d)
                assert_close(out.cpu(), expected, torch.float32)

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
            args = (
                c_in_x,
                mask,
                w.requires_grad_(True),
                bias,
                None,
                None,
                [1, 1, 1],
                [1, 1, 1],
                [1, 1, 1],
                "relu",
                EPS,
            )
            torch.library.opcheck(torch.ops.combcn.masked_conv3d.default, args)


# --- The CUDA kernels themselves, run on the CPU (no GPU needed) --------------------------------

GEOMETRY_FIELDS = 21


@pytest.fixture(scope="module")
def emulation(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    """test_ops_cuda_emulation.cpp built with g++: the .cuh kernels, a std::thread per CUDA thread."""
    cxx = shutil.which("c++") or shutil.which("g++")
    include = cuda_include_dir()
    if cxx is None or include is None:
        pytest.skip("needs a C++ compiler and the CUDA toolkit headers (cuda_runtime.h)")
    library = tmp_path_factory.mktemp("cuda_emulation") / "emulation.so"
    source = Path(__file__).with_name("test_ops_cuda_emulation.cpp")
    cmd = [
        cxx,
        "-std=c++20",
        "-O1",
        "-shared",
        "-fPIC",
        "-pthread",
        "-isystem",
        str(include),
        "-I",
        str(NATIVE),
        str(source),
        "-o",
        str(library),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return ctypes.CDLL(str(library))


def geometry(x, weight, stride, padding, dilation, out_size) -> torch.Tensor:
    values = [*x.shape, weight.shape[0], *out_size, *weight.shape[2:], *stride, *padding, *dilation]
    assert len(values) == GEOMETRY_FIELDS
    return torch.tensor(values, dtype=torch.int64)


def ptr(t: torch.Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(None if t is None else t.data_ptr())


DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}  # combcn::cuda::Dtype
ALL_DTYPES = list(DTYPE_CODES)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def coefficients(bias, scale, shift, relu: bool, dtype: torch.dtype, c_out: int) -> torch.Tensor:
    """[3, C_out] in the accumulation type: masked_conv3d_common.h's rule in torch (multiply, then add)."""
    acc = acc_dtype(dtype)
    s = scale.to(acc) if scale is not None else torch.ones(c_out, dtype=acc)
    t = shift.to(acc) if shift is not None else torch.zeros(c_out, dtype=acc)
    add = s * bias.to(acc) + t if bias is not None else t.clone()
    hole = torch.where(t < 0, torch.zeros_like(t), t) if relu else t  # torch.relu: NaN and -0 pass
    return torch.stack([s, add, hole]).contiguous()


def emulated_coefficients(
    emulation, bias, scale, shift, relu: bool, dtype: torch.dtype, c_out: int
) -> torch.Tensor:
    table = torch.full((3, c_out), float("nan"), dtype=acc_dtype(dtype))
    args = [None if t is None else t.contiguous() for t in (bias, scale, shift)]
    code = DTYPE_CODES[dtype]
    assert (
        emulation.emulate_coefficients(
            code, *(ptr(t) for t in args), ptr(table), ctypes.c_int64(c_out), int(relu)
        )
        == 0
    )
    return table


def assert_bitwise_equal(a: torch.Tensor, b: torch.Tensor, what: object) -> None:
    """Same bits (signed zeros included) where not NaN, NaN at the same places (payloads may differ)."""
    nan = torch.isnan(a)
    assert torch.equal(nan, torch.isnan(b)), what
    view = torch.int64 if a.dtype == torch.float64 else torch.int32
    assert torch.equal(a[~nan].contiguous().view(view), b[~nan].contiguous().view(view)), what


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("relu", [False, True])
def test_emulated_coefficients(emulation: ctypes.CDLL, dtype, relu) -> None:
    """The coefficient kernel, bit for bit against the rule, with NaN, -0 and negative shifts; every
    combination of bias and batch norm (40 channels: a partial second block of the launch is not needed)."""
    g = torch.Generator().manual_seed(1)
    c_out = 40
    bias, scale, shift = (torch.randn(c_out, generator=g).to(dtype) for _ in range(3))
    shift[:3] = torch.tensor([float("nan"), -0.0, -2.0]).to(dtype)
    for b, bn in ((bias, True), (None, True), (bias, False), (None, False)):
        sc, sh = (scale, shift) if bn else (None, None)
        got = emulated_coefficients(emulation, b, sc, sh, relu, dtype, c_out)
        want = coefficients(b, sc, sh, relu, dtype, c_out)
        assert_bitwise_equal(got, want, (b is None, bn))
        if bn:  # hole row: a NaN shift survives ReLU, -0 stays -0, -2 becomes 0 under ReLU
            assert torch.isnan(got[2, 0]) and torch.signbit(got[2, 1])
            assert got[2, 2] == (0 if relu else -2)


GEOMETRY_DISPATCH = [
    # (C_in, C_out, k, dtype, direct?)
    (4, 16, 5, torch.float32, True),  # the first layer: 4 * 125 * 4 * 16 = 32000 bytes of weights
    (3, 64, 5, torch.bfloat16, True),
    (1, 8, 3, torch.float16, True),
    (5, 16, 3, torch.float32, False),  # C_in > 4
    (16, 32, 3, torch.float32, False),
    (4, 16, 5, torch.float64, False),  # 64000 bytes of double weights > 48 KiB
    (2, 16, 5, torch.float64, True),
    (3, 16, 7, torch.float32, False),  # 65856 bytes
    (4, 65535 * 16 + 1, 1, torch.float32, False),  # channel tiles beyond gridDim.y
]


@pytest.mark.parametrize(("c_in", "c_out", "k", "dtype", "direct"), GEOMETRY_DISPATCH)
def test_emulated_dispatch_decision(emulation: ctypes.CDLL, c_in, c_out, k, dtype, direct) -> None:
    geom = torch.tensor(
        [1, c_in, 4, 8, 8, c_out, 4, 8, 8, k, k, k, 1, 1, 1, 0, 0, 0, 1, 1, 1], dtype=torch.int64
    )
    assert emulation.emulate_use_direct_kernel(DTYPE_CODES[dtype], ptr(geom)) == int(direct)


def test_emulated_output_size_rule(emulation: ctypes.CDLL) -> None:
    """masked_conv3d_common.h's conv_output_size equals the Python rule on a grid that includes inputs
    smaller than the dilated kernel (0 = refused) and strides whose C++ truncation of a negative number
    would have differed from floor division."""
    emulation.emulate_conv_output_size.restype = ctypes.c_int64
    emulation.emulate_conv_output_size.argtypes = [ctypes.c_int64] * 5
    for n, k, s, p, d in itertools.product(range(0, 9), (1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2, 4)):
        span = n + 2 * p - d * (k - 1)
        python = conv_output_size(n, k, s, p, d)
        assert python == ((span - 1) // s + 1 if span >= 1 else 0)
        assert emulation.emulate_conv_output_size(n, k, s, p, d) == python, (n, k, s, p, d)


EMULATED_CASES = [
    (3, (1, 1, 1), 2, 6),
    (3, (1, 2, 2), 1, 6),
    (5, (1, 1, 1), 1, 3),
    (3, (1, 1, 1), 8, 4),
    (3, (1, 2, 2), 4, 2),
]


def emulate_op(emulation, x, mask, weight, bias, bn, stride, pad, dil, act: str):
    """The glue's sequence (coefficients, dispatch, kernels) on the CPU; the cuDNN stand-in is a float64
    convolution rounded to x.dtype. Returns (out NCDHW, new_mask, path: 1 direct, 0 cuDNN)."""
    dtype = x.dtype
    out_size = [
        conv_output_size(n, k, s, p, d)
        for n, k, s, p, d in zip(x.shape[2:], weight.shape[2:], stride, pad, dil, strict=True)
    ]
    geom = geometry(x, weight, stride, pad, dil, out_size)
    conv = F.conv3d((x * mask).double(), weight.double(), None, stride, pad, dil).to(dtype)
    conv = conv.permute(0, 2, 3, 4, 1).contiguous()
    out = torch.full_like(conv, float("nan"))
    new_mask = torch.full((x.shape[0], 1, *out_size), -1.0).to(dtype)
    coeffs = torch.empty(3, weight.shape[0], dtype=acc_dtype(dtype))
    strides = torch.tensor(x.stride(), dtype=torch.int64)
    scale, shift = (None, None) if bn is None else bn
    args = (
        x,
        strides,
        mask.contiguous(),
        weight.contiguous(),
        bias,
        scale,
        shift,
        conv,
        out,
        new_mask,
        coeffs,
        geom,
    )
    path = emulation.emulate_masked_conv3d(
        DTYPE_CODES[dtype], *(ptr(t) for t in args), int(act == "relu"), ctypes.c_double(EPS)
    )
    assert path in (0, 1)
    return out.permute(0, 4, 1, 2, 3), new_mask, path


@pytest.mark.parametrize("dtype", ALL_DTYPES)
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
        coeffs = emulated_coefficients(emulation, bias, scale, shift, True, dtype, 20)
        mask_c = mask.contiguous()
        # cuDNN path: NDHWC conv output (rounded to dtype), epilogue in place as in the CUDA glue.
        conv = F.conv3d((x * mask).double(), weight.double(), None, stride, pad, dil).to(dtype)
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


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("c_in", [3, 6])
@pytest.mark.parametrize("epilogue", ["none", "bn", "relu", "bn+relu"])
def test_emulated_glue(emulation: ctypes.CDLL, dtype, c_in, epilogue) -> None:
    """The glue's whole sequence for N = 2, with and without bias, batch norm and ReLU, in every dtype, on
    channels_last_3d and channel-strided inputs; c_in 3 takes the direct kernel, 6 the cuDNN path."""
    x, mask, weight, bias = case(c_in=c_in, c_out=18, shape=(2, 3, 6, 5), dtype=dtype, seed=7)
    bn = (torch.rand(18).to(dtype) + 0.5, torch.randn(18).to(dtype)) if "bn" in epilogue else None
    act = "relu" if "relu" in epilogue else "none"
    layouts = (
        x.contiguous(memory_format=torch.channels_last_3d),
        torch.stack([x, x], 2).flatten(1, 2)[:, ::2],
    )
    for b, xi in ((bias, layouts[0]), (None, layouts[1])):
        ref, ref_mask = reference64(x, mask, weight, b, (1, 1, 1), (1, 1, 1), (1, 1, 1), bn, act)
        out, new_mask, path = emulate_op(
            emulation, xi, mask, weight, b, bn, (1, 1, 1), (1, 1, 1), (1, 1, 1), act
        )
        assert path == int(c_in <= 4)
        assert_close(out, ref, dtype)
        torch.testing.assert_close(new_mask.double(), ref_mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("c_in", [3, 6])
@pytest.mark.parametrize("act", ["none", "relu"])
def test_emulated_nan_inf(emulation: ctypes.CDLL, dtype, c_in, act) -> None:
    """A NaN at a hole tap and an Inf at a valid tap: NaN exactly where the reference has it, on both
    paths (the direct kernel must not skip hole taps), and ReLU lets NaN through."""
    x, mask, weight, bias = nan_case(dtype, c_in=c_in)
    bn = (torch.rand(6).to(dtype) + 0.5, torch.randn(6).to(dtype))
    ref, _ = reference64(x, mask, weight, bias, (1, 1, 1), (1, 1, 1), (1, 1, 1), bn, act)
    out, _, path = emulate_op(emulation, x, mask, weight, bias, bn, (1, 1, 1), (1, 1, 1), (1, 1, 1), act)
    assert path == int(c_in <= 4)
    assert_same_nonfinite(out, ref, dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_emulated_conv_rounded_to_input_dtype(emulation: ctypes.CDLL, dtype) -> None:
    """The direct kernel rounds its float accumulator to the input dtype before the epilogue, as cuDNN's
    output is rounded: the rounding case gives exactly 0 (u^2 without the rounding)."""
    x, mask, weight, bias = rounding_case(dtype)
    out, _, path = emulate_op(emulation, x, mask, weight, bias, None, (1, 1, 1), (0, 0, 0), (1, 1, 1), "none")
    assert path == 1
    assert (out == 0).all(), out.unique()


def test_tolerances_cover_every_emulated_dtype() -> None:
    assert set(ALL_DTYPES) <= set(TOLERANCES)
