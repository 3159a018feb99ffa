"""Tests of ``combcn.ops.masked_conv3d``: the native CPU op against the pure-PyTorch reference.

Kornia vocabulary (test_smoke, test_exception, test_cardinality, test_gradcheck, test_module,
test_dynamo, test_opcheck). Tolerances per dtype live in ``TOLERANCES``. The oracle is the
float64 reference run on the same (dtype-rounded) inputs, so bf16 errors are the op's own.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import torch.nn.functional as F

from combcn.ops import EPS, MaskedConv3d, _ext, backends, masked_conv3d, masked_conv3d_reference

# The precision contract (docs/OPS.md, "Precision contract"), the one place for tolerances: (rtol, atol)
# per dtype, the same for every backend (CPU, CUDA direct kernel, CUDA cuDNN path, reference); atol is
# relative to the largest |reference| value of the case. The oracle is the float64 reference on the same
# inputs. TF32 (float32 with allow_tf32, CUDA only) has its own entry.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-7, 1e-9),
    torch.float32: (1e-4, 1e-5),
    torch.bfloat16: (1.6e-2, 8e-3),
    torch.float16: (2e-3, 1e-3),
}
TF32_TOLERANCE: tuple[float, float] = (1e-2, 5e-3)


def tolerance(dtype: torch.dtype, tf32: bool = False) -> tuple[float, float]:
    """(rtol, atol relative to max|reference|) of the contract for ``dtype`` (float32 with TF32 opted in)."""
    return TF32_TOLERANCE if tf32 and dtype == torch.float32 else TOLERANCES[dtype]


KERNELS = (3, 5)
STRIDES = ((1, 1, 1), (1, 2, 2))
DILATIONS = (1, 2, 4, 8)
MASK_KINDS = ("random", "all_valid", "all_hole", "single_pixel", "hole_blocks")


def compiler_present() -> bool:
    return shutil.which("c++") is not None or shutil.which("g++") is not None


@pytest.fixture(scope="module")
def native() -> bool:
    return _ext.load()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny volumes: waking a thread pool on a shared 2-core box costs more than the work.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_mask(kind: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A [N, 1, T, H, W] float mask (1 = valid) of the given kind."""
    n, _, t, h, w = shape
    if kind == "random":
        return (torch.rand(shape, generator=generator) > 0.5).double()
    if kind == "all_valid":
        return torch.ones(shape, dtype=torch.float64)
    if kind == "all_hole":
        return torch.zeros(shape, dtype=torch.float64)
    if kind == "single_pixel":
        mask = torch.zeros(shape, dtype=torch.float64)
        mask[:, :, t // 2, h // 2, w // 3] = 1
        return mask
    # hole_blocks: a large hole so that many windows are hole-only, plus a valid border.
    mask = torch.ones(shape, dtype=torch.float64)
    mask[:, :, :, 1 : h - 1, 1 : w - 1] = 0
    return mask


def reference64(x, mask, weight, bias, stride, padding, dilation, bn=None, activation="none"):
    """The oracle: the float64 reference on the very same (dtype-rounded) inputs."""
    scale, shift = (None, None) if bn is None else (bn[0].double(), bn[1].double())
    return masked_conv3d_reference(
        x.double(),
        mask.double(),
        weight.double(),
        None if bias is None else bias.double(),
        scale,
        shift,
        stride,
        padding,
        dilation,
        activation,
    )


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, tf32: bool = False
) -> None:
    rtol, atol = tolerance(dtype, tf32)
    scale = max(expected.abs().max().item(), 1.0) if expected.numel() else 1.0
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol * scale)


def case(c_in=3, c_out=5, shape=(2, 4, 9, 10), k=3, dtype=torch.float32, seed=0, mask_kind="random"):
    g = torch.Generator().manual_seed(seed)
    n, t, h, w = shape
    x = torch.randn(n, c_in, t, h, w, generator=g, dtype=torch.float64).to(dtype)
    mask = make_mask(mask_kind, (n, 1, t, h, w), g).to(dtype)
    weight = (torch.randn(c_out, c_in, k, k, k, generator=g, dtype=torch.float64) * 0.2).to(dtype)
    bias = torch.randn(c_out, generator=g, dtype=torch.float64).to(dtype)
    return x, mask, weight, bias


class TestMaskedConv3d:
    def test_native_backend_active(self, native: bool) -> None:
        # A broken build must not hide behind the reference fallback: fail where a compiler exists.
        if not compiler_present():
            pytest.skip("no C++ compiler on this machine: the reference fallback is expected")
        assert native, f"native op failed to build: {_ext.state()['error']}"
        state = backends()
        assert state["cpu"]["compiled"] and state["cpu"]["active"], state
        assert torch.ops.combcn.masked_conv3d.default is not None

    def test_smoke(self, native: bool) -> None:
        x, mask, weight, bias = case()
        out, new_mask = masked_conv3d(x, mask, weight, bias, padding="same", activation="relu")
        assert out.shape == (2, 5, 4, 9, 10) and new_mask.shape == (2, 1, 4, 9, 10)
        assert out.dtype == x.dtype and new_mask.dtype == x.dtype
        assert set(new_mask.unique().tolist()) <= {0.0, 1.0}
        assert (out >= 0).all()
        if native:
            assert out.is_contiguous(memory_format=torch.channels_last_3d)

    @pytest.mark.parametrize(
        ("k", "stride", "dilation"), list(itertools.product(KERNELS, STRIDES, DILATIONS))
    )
    def test_against_reference(
        self, native: bool, k: int, stride: tuple[int, int, int], dilation: int
    ) -> None:
        dil = (1, dilation, dilation)
        for seed, (mask_kind, padding) in enumerate(itertools.product(MASK_KINDS, ("same", "zero"))):
            x, mask, weight, bias = case(k=k, shape=(1, 5, 11, 13), seed=seed, mask_kind=mask_kind)
            if padding == "same":
                pad = tuple(d * (k - 1) // 2 for d in dil)
            else:
                pad = (0, 0, 0)
                if 11 - dilation * (k - 1) < 1:
                    continue  # no valid output without padding at this dilation
            out, new_mask = masked_conv3d(x, mask, weight, bias, stride, pad, dil)
            ref, ref_mask = reference64(x, mask, weight, bias, stride, pad, dil)
            assert_close(out, ref, torch.float32)
            torch.testing.assert_close(new_mask.double(), ref_mask)
            if mask_kind == "all_hole":
                assert (out == 0).all() and (new_mask == 0).all()

    def test_ratio_at_borders(self, native: bool) -> None:
        # An all-valid mask with zero padding still rescales at the borders: r = |W| / s > 1 there.
        x = torch.ones(1, 1, 3, 4, 4)
        mask = torch.ones(1, 1, 3, 4, 4)
        weight = torch.ones(1, 1, 3, 3, 3)
        out, new_mask = masked_conv3d(x, mask, weight, None, 1, 1, 1)
        # conv of ones over the s valid taps = s, times 27 / s = 27 everywhere.
        torch.testing.assert_close(out, torch.full_like(out, 27.0))
        assert (new_mask == 1).all()

    def test_soft_mask_and_eps(self, native: bool) -> None:
        x, _, weight, bias = case(shape=(1, 3, 6, 6))
        mask = torch.rand(1, 1, 3, 6, 6, generator=torch.Generator().manual_seed(1))
        mask[..., :3, :] = EPS / 100  # windows whose whole count stays below EPS are holes
        out, new_mask = masked_conv3d(x, mask, weight, bias, 1, 1, 1)
        ref, ref_mask = reference64(x, mask, weight, bias, (1, 1, 1), (1, 1, 1), (1, 1, 1))
        assert_close(out, ref, torch.float32)
        torch.testing.assert_close(new_mask.double(), ref_mask)

    def test_bn_relu_epilogue_holes(self, native: bool) -> None:
        # Fused inference BN + ReLU equals conv -> BatchNorm3d (eval) -> ReLU, hole outputs included.
        x, mask, weight, bias = case(c_out=6, shape=(1, 4, 8, 8), mask_kind="hole_blocks")
        bn = torch.nn.BatchNorm3d(6).eval()
        with torch.no_grad():
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-1, 1)
        out, new_mask = masked_conv3d(x, mask, weight, bias, 1, "same", 1, bn=bn, activation="relu")
        plain, _ = masked_conv3d(x, mask, weight, bias, 1, "same", 1)
        with torch.no_grad():
            expected = torch.relu(bn(plain))
        assert_close(out, expected, torch.float32)
        holes = (new_mask == 0).expand_as(out)
        assert holes.any()
        shift = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)
        hole_values = torch.relu(shift).view(1, -1, 1, 1, 1).expand_as(out)
        torch.testing.assert_close(out[holes], hole_values[holes].detach(), rtol=1e-5, atol=1e-6)
        assert (out[holes] != 0).any(), "hole outputs are act(beta'), not 0"

    def test_batch_zero(self, native: bool) -> None:
        x, mask, weight, bias = case(shape=(2, 4, 9, 10))
        out, new_mask = masked_conv3d(x[:0], mask[:0], weight, bias, (1, 2, 2), "same", 2)
        assert out.shape == (0, 5, 4, 5, 5) and new_mask.shape == (0, 1, 4, 5, 5)

    def test_noncontiguous_and_channels_last(self, native: bool) -> None:
        x, mask, weight, bias = case(c_in=4, shape=(2, 6, 12, 10))
        ref, ref_mask = reference64(x, mask, weight, bias, (1, 1, 1), (1, 2, 2), (1, 2, 2))
        x_cl = x.contiguous(memory_format=torch.channels_last_3d)
        x_nc = torch.randn(2, 6, 12, 10, 8).permute(0, 4, 1, 2, 3)  # non-contiguous [2, 8, 6, 12, 10]
        x_nc = x_nc[:, ::2]
        x_nc.copy_(x)
        mask_nc = mask.expand(2, 3, 6, 12, 10)[:, 1:2]  # stride 0 broadcast view
        for xi, mi in ((x_cl, mask), (x_nc, mask_nc), (x.transpose(3, 4).contiguous().transpose(3, 4), mask)):
            out, new_mask = masked_conv3d(xi, mi, weight, bias, 1, (1, 2, 2), (1, 2, 2))
            assert_close(out, ref, torch.float32)
            torch.testing.assert_close(new_mask.double(), ref_mask)

    @pytest.mark.parametrize("dtype", [torch.bfloat16])
    def test_low_precision(self, native: bool, dtype: torch.dtype) -> None:
        for k, dilation, stride in ((5, 1, (1, 1, 1)), (3, 2, (1, 2, 2)), (3, 8, (1, 1, 1))):
            x, mask, weight, bias = case(c_in=4, c_out=8, k=k, shape=(1, 4, 12, 12), dtype=dtype)
            bn = (torch.rand(8, dtype=dtype) + 0.5, torch.randn(8, dtype=dtype))
            dil, pad = (
                (1, dilation, dilation),
                ((k - 1) // 2, dilation * (k - 1) // 2, dilation * (k - 1) // 2),
            )
            out, new_mask = masked_conv3d(x, mask, weight, bias, stride, pad, dil, bn=bn, activation="relu")
            ref, ref_mask = reference64(x, mask, weight, bias, stride, pad, dil, bn, "relu")
            assert out.dtype == dtype
            assert_close(out, ref, dtype)
            torch.testing.assert_close(new_mask.double(), ref_mask)

    def test_even_and_anisotropic_kernels(self, native: bool) -> None:
        # (3, 4, 4) kernels with explicit padding, as a strided down layer may use.
        x, mask, _, bias = case(c_in=3, shape=(1, 4, 10, 12), seed=5)
        weight = torch.randn(5, 3, 3, 4, 4, generator=torch.Generator().manual_seed(6)) * 0.2
        for stride, padding in (((1, 2, 2), (1, 1, 1)), ((1, 1, 1), (1, 2, 1))):
            out, new_mask = masked_conv3d(x, mask, weight, bias, stride, padding, 1, activation="relu")
            ref, ref_mask = reference64(x, mask, weight, bias, stride, padding, (1, 1, 1), activation="relu")
            assert_close(out, ref, torch.float32)
            torch.testing.assert_close(new_mask.double(), ref_mask)

    def test_autocast(self, native: bool) -> None:
        x, mask, weight, bias = case(c_in=3, shape=(1, 3, 6, 6))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, new_mask = masked_conv3d(x, mask, weight, bias, 1, "same", 1)
        assert out.dtype == torch.bfloat16 and new_mask.dtype == torch.bfloat16
        ref, _ = reference64(
            x.bfloat16(), mask, weight.bfloat16(), bias.bfloat16(), (1, 1, 1), (1, 1, 1), (1, 1, 1)
        )
        assert_close(out, ref, torch.bfloat16)

    @pytest.mark.parametrize(
        ("size", "k", "stride", "padding", "dilation", "expected"),
        [
            ((4, 16, 16), 3, (1, 2, 2), "same", 1, (4, 8, 8)),
            ((4, 16, 16), 3, 1, "same", (1, 8, 8), (4, 16, 16)),
            ((4, 16, 16), 5, 1, "same", 1, (4, 16, 16)),
            ((4, 16, 16), 3, 1, 0, 1, (2, 14, 14)),
            ((4, 17, 15), 3, (1, 2, 2), 1, 1, (4, 9, 8)),
            ((4, 16, 16), 4, (1, 2, 2), 1, 1, (3, 8, 8)),
        ],
    )
    def test_cardinality(self, native: bool, size, k, stride, padding, dilation, expected) -> None:
        x = torch.randn(2, 3, *size)
        mask = torch.ones(2, 1, *size)
        out, new_mask = masked_conv3d(x, mask, torch.randn(4, 3, k, k, k), None, stride, padding, dilation)
        assert out.shape == (2, 4, *expected) and new_mask.shape == (2, 1, *expected)

    @pytest.mark.parametrize(
        ("change", "argument"),
        [
            (lambda a: a.update(x=a["x"][0]), "`x`"),
            (lambda a: a.update(mask=a["mask"].expand(2, 3, 4, 6, 6)), "`mask`"),
            (lambda a: a.update(mask=a["mask"][:, :, :3]), "`mask`"),
            (lambda a: a.update(mask=a["mask"].long()), "`mask`"),
            (lambda a: a.update(weight=a["weight"].double()), "`weight`"),
            (lambda a: a.update(weight=a["weight"][:, :2]), "`weight`"),
            (lambda a: a.update(weight=a["weight"][0]), "`weight`"),
            (lambda a: a.update(bias=torch.zeros(3)), "`bias`"),
            (lambda a: a.update(dilation=-1), "`dilation`"),
            (lambda a: a.update(dilation=(1, 0, 1)), "`dilation`"),
            (lambda a: a.update(stride=0), "`stride`"),
            (lambda a: a.update(stride=(1, 2)), "`stride`"),
            (lambda a: a.update(padding=-1), "`padding`"),
            (lambda a: a.update(padding="valid"), "`padding`"),
            (lambda a: a.update(padding="same", weight=torch.randn(5, 3, 4, 4, 4)), "`padding`"),
            (lambda a: a.update(activation="gelu"), "`activation`"),
            (lambda a: a.update(bn=(torch.ones(5), torch.zeros(4))), "`bn`"),
            (lambda a: a.update(bn="yes"), "`bn`"),
            (lambda a: a.update(x=torch.randn(2, 3, 4, 2, 2), mask=torch.ones(2, 1, 4, 2, 2)), "`x`"),
            (lambda a: a.update(x=a["x"].long()), "`x`"),
        ],
    )
    def test_exception(self, change, argument: str) -> None:
        args = {
            "x": torch.randn(2, 3, 4, 6, 6),
            "mask": torch.ones(2, 1, 4, 6, 6),
            "weight": torch.randn(5, 3, 3, 3, 3),
            "bias": torch.zeros(5),
            "stride": 1,
            "padding": 0,
            "dilation": 1,
            "bn": None,
            "activation": None,
        }
        change(args)
        with pytest.raises(ValueError, match=argument):
            masked_conv3d(**args)

    def test_exception_device(self) -> None:
        meta = torch.ones(1, 1, 3, 4, 4, device="meta")
        with pytest.raises(ValueError, match="`mask`"):
            masked_conv3d(torch.randn(1, 2, 3, 4, 4), meta, torch.randn(2, 2, 3, 3, 3))

    def test_gradcheck(self, native: bool) -> None:
        x, mask, weight, bias = case(c_in=2, c_out=3, shape=(1, 3, 5, 4), dtype=torch.float64, seed=3)
        x.requires_grad_(True)
        weight.requires_grad_(True)
        bias.requires_grad_(True)
        bn = (torch.rand(3, dtype=torch.float64) + 0.5, torch.randn(3, dtype=torch.float64))

        def fn(x, weight, bias, stride, dilation, activation, bn):
            return masked_conv3d(
                x, mask, weight, bias, stride, "same", dilation, bn=bn, activation=activation
            )[0]

        for stride, dilation, activation, epilogue in (
            ((1, 1, 1), 1, None, None),
            ((1, 2, 2), (1, 2, 2), "relu", bn),
        ):
            assert torch.autograd.gradcheck(
                lambda x, w, b, s=stride, d=dilation, a=activation, e=epilogue: fn(x, w, b, s, d, a, e),
                (x, weight, bias),
                fast_mode=True,
            )
        # One small slow-mode case: full Jacobian.
        xs, ms, ws, bs = case(c_in=1, c_out=2, shape=(1, 2, 3, 3), dtype=torch.float64, seed=4)
        assert torch.autograd.gradcheck(
            lambda x, w, b: masked_conv3d(
                x, ms, w, b, 1, "same", 1, bn=(bn[0][:2], bn[1][:2]), activation="relu"
            )[0],
            tuple(t.requires_grad_(True) for t in (xs, ws, bs)),
        )

    def test_gradients_match_reference(self, native: bool) -> None:
        x, mask, weight, bias = case(
            c_in=3, c_out=4, shape=(2, 4, 7, 6), dtype=torch.float64, mask_kind="random"
        )
        bn = (torch.rand(4, dtype=torch.float64) + 0.5, torch.randn(4, dtype=torch.float64))
        grads = []
        for fn in ("op", "reference"):
            xs, ws, bs = (t.clone().requires_grad_(True) for t in (x, weight, bias))
            if fn == "op":
                out, _ = masked_conv3d(
                    xs, mask, ws, bs, (1, 2, 2), "same", (1, 2, 2), bn=bn, activation="relu"
                )
            else:
                out, _ = masked_conv3d_reference(
                    xs, mask, ws, bs, bn[0], bn[1], (1, 2, 2), (1, 2, 2), (1, 2, 2), "relu"
                )
            (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
            grads.append((xs.grad, ws.grad, bs.grad))
        for got, want in zip(grads[0], grads[1], strict=True):
            torch.testing.assert_close(got, want)

    def test_opcheck(self, native: bool) -> None:
        if not native:
            pytest.skip("the native op is not built (test_native_backend_active reports why)")
        op = torch.ops.combcn.masked_conv3d.default
        x, mask, weight, bias = case(c_in=2, c_out=3, shape=(1, 3, 5, 4), dtype=torch.float64)
        samples = [
            (
                x.requires_grad_(True),
                mask,
                weight.requires_grad_(True),
                bias,
                None,
                None,
                [1, 1, 1],
                [1, 1, 1],
                [1, 1, 1],
                "none",
                EPS,
            ),
            (
                x.to(torch.float32),
                mask.float(),
                weight.detach().float(),
                None,
                torch.ones(3),
                torch.zeros(3),
                [1, 2, 2],
                [1, 2, 2],
                [1, 2, 2],
                "relu",
                EPS,
            ),
        ]
        for args in samples:
            torch.library.opcheck(op, args)

    def test_dynamo(self, native: bool) -> None:
        # fullgraph=True: no graph break through the custom op; aot_eager also traces fake + autograd.
        x, mask, weight, bias = case(c_in=3, c_out=4, shape=(1, 4, 8, 8))
        layer = MaskedConv3d(3, 4, 3, padding="same", dilation=(1, 2, 2), activation="relu")
        weight2 = torch.randn(2, 4, 3, 3, 3)

        def two_layers(x, mask):
            y, m = layer(x, mask)
            return masked_conv3d(y, m, weight2, None, (1, 2, 2), "same", 1)

        compiled = torch.compile(two_layers, fullgraph=True, backend="aot_eager")
        torch._dynamo.reset()
        got = compiled(x, mask)
        want = two_layers(x, mask)
        torch.testing.assert_close(got[0], want[0])
        torch.testing.assert_close(got[1], want[1])
        got[0].sum().backward()
        assert layer.weight.grad is not None

    def test_dynamo_first_call(self, native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        # A process whose first masked_conv3d call is inside torch.compile must not try to build there.
        x, mask, weight, bias = case(c_in=3, c_out=4, shape=(1, 3, 6, 6))
        fresh = {"tried": False, "loaded": False, "cuda": False, "error": None, "path": None}
        monkeypatch.setattr(_ext, "_state", fresh)
        monkeypatch.setattr(_ext, "load", lambda *a, **k: pytest.fail("load() called while tracing"))
        compiled = torch.compile(
            lambda x, m: masked_conv3d(x, m, weight, bias, 1, "same", 1), fullgraph=True, backend="aot_eager"
        )
        torch._dynamo.reset()
        out, new_mask = compiled(x, mask)
        ref, ref_mask = reference64(x, mask, weight, bias, (1, 1, 1), (1, 1, 1), (1, 1, 1))
        assert_close(out, ref, torch.float32)
        torch._dynamo.reset()

    def test_module(self, native: bool) -> None:
        torch.manual_seed(0)
        layer = MaskedConv3d(
            3, 6, 3, stride=(1, 2, 2), padding="same", dilation=1, batch_norm=True, activation="relu"
        )
        assert "kernel_size=(3, 3, 3)" in repr(layer)
        x, mask, _, _ = case(c_in=3, shape=(2, 4, 8, 8), mask_kind="hole_blocks")
        out, new_mask = layer(x, mask)  # training: batch statistics
        out.sum().backward()
        assert layer.weight.grad is not None and layer.bias is not None and layer.bias.grad is not None
        layer.eval()
        fused, fused_mask = layer(x, mask)
        plain, _ = masked_conv3d(x, mask, layer.weight, layer.bias, (1, 2, 2), "same", 1)
        with torch.no_grad():
            expected = torch.relu(layer.bn(plain))
        assert_close(fused.detach(), expected, torch.float32)
        torch.testing.assert_close(fused_mask, new_mask)

    def test_reference_fallback(self, native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        # With no native kernel the public function gives the reference's answer ...
        x, mask, weight, bias = case(shape=(1, 4, 7, 7))
        native_out = masked_conv3d(x, mask, weight, bias, 1, "same", 2, activation="relu")
        monkeypatch.setattr(_ext, "has_kernel", lambda device_type: False)
        ref_out = masked_conv3d(x, mask, weight, bias, 1, "same", 2, activation="relu")
        torch.testing.assert_close(native_out[0], ref_out[0], rtol=1e-5, atol=1e-5)
        # ... and a failed build warns once, in one line, and reports itself in backends().
        monkeypatch.setattr(
            _ext, "_state", {"tried": False, "loaded": False, "cuda": False, "error": None, "path": None}
        )
        monkeypatch.setattr(_ext, "SOURCE_ROOT", _ext.SOURCE_ROOT / "does-not-exist")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert _ext.load() is False
        assert len(caught) == 1 and "\n" not in str(caught[0].message)
        assert "reference" in str(caught[0].message)
        state = backends()
        assert state["reference"]["active"] and not state["cpu"]["active"]
        assert "not built" in state["cpu"]["note"]

    def test_cache_dir(self, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
        monkeypatch.setenv("COMBCN_CACHE", str(tmp_path))
        assert _ext.cache_dir().parent == tmp_path / "ext"
        assert torch.__version__.split("+")[0] in _ext.cache_dir().name
        # another checkout (another native/ops folder) builds in a folder of its own
        mine = _ext.cache_dir()
        monkeypatch.setattr(_ext, "SOURCE_ROOT", tmp_path / "other" / "native" / "ops")
        assert _ext.cache_dir() != mine and _ext.cache_dir().parent == mine.parent


def op_args(x, mask, weight, bias=None, scale=None, shift=None, stride=1, padding=1, dilation=1, act="none"):
    """Positional arguments of ``torch.ops.combcn.masked_conv3d`` (schema order)."""
    return (x, mask, weight, bias, scale, shift, [stride] * 3, [padding] * 3, [dilation] * 3, act, EPS)


def nan_case(dtype: torch.dtype = torch.float32, c_in: int = 3, device: str = "cpu"):
    """A case with a NaN at a hole tap, an Inf at a valid tap and a hole block (`make_mask` hole_blocks)."""
    x, mask, weight, bias = case(c_in=c_in, c_out=6, shape=(2, 3, 8, 9), dtype=dtype, mask_kind="hole_blocks")
    x[0, 0, 1, 1, 4] = float("nan")  # a hole tap next to the valid border: valid windows read it
    assert mask[0, 0, 1, 1, 4] == 0 and mask[0, 0, 1, 0, 4] == 1
    x[1, c_in - 1, 0, 0, 0] = float("inf")  # on the valid border
    assert mask[1, 0, 0, 0, 0] == 1
    return tuple(t.to(device) for t in (x, mask, weight, bias))


def assert_same_nonfinite(
    out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, tf32: bool = False
) -> None:
    """NaN exactly where the reference has NaN (the NaN/Inf rules), the finite values within the contract."""
    out, ref = out.cpu().double(), ref.cpu().double()
    assert torch.equal(torch.isnan(out), torch.isnan(ref)), "NaN positions differ from the reference"
    assert torch.isnan(ref).any(), "the case must produce NaN outputs"
    finite = torch.isfinite(ref)
    assert torch.equal(finite, torch.isfinite(out))
    rtol, atol = tolerance(dtype, tf32)
    scale = max(ref[finite].abs().max().item(), 1.0)
    torch.testing.assert_close(out[finite], ref[finite], rtol=rtol, atol=atol * scale)


def rounding_case(dtype: torch.dtype, c_in: int = 1, device: str = "cpu"):
    """A 1x1x1 convolution whose float32 value is not representable in ``dtype``: conv = (1 + u)^2 with u one
    unit in the last place, bias = -round(conv). Rounding the convolution to ``dtype`` before the epilogue
    (the contract) gives exactly 0; skipping it gives u^2."""
    u = 2.0**-7 if dtype == torch.bfloat16 else 2.0**-10
    x = torch.zeros(1, c_in, 2, 3, 3, dtype=dtype)
    x[:, 0] = 1 + u
    weight = torch.zeros(4, c_in, 1, 1, 1, dtype=dtype)
    weight[:, 0] = 1 + u
    bias = torch.full((4,), -(1 + 2 * u), dtype=dtype)
    assert float(bias[0]) == -(1 + 2 * u) and float(x.flatten()[0]) ** 2 != 1 + 2 * u
    mask = torch.ones(1, 1, 2, 3, 3, dtype=dtype)
    return tuple(t.to(device) for t in (x, mask, weight, bias))


class TestContract:
    """The rules every backend shares (docs/OPS.md), on the native CPU op for real."""

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
    @pytest.mark.parametrize("epilogue", ["none", "bn", "relu", "bn+relu"])
    def test_batch_and_epilogue_variants(self, native: bool, dtype: torch.dtype, epilogue: str) -> None:
        x, mask, weight, bias = case(c_in=5, c_out=7, shape=(3, 4, 7, 8), dtype=dtype, seed=11)
        bn = (torch.rand(7, dtype=dtype) + 0.5, torch.randn(7, dtype=dtype)) if "bn" in epilogue else None
        act = "relu" if "relu" in epilogue else None
        for b in (bias, None):
            out, new_mask = masked_conv3d(
                x, mask, weight, b, (1, 2, 2), "same", (1, 2, 2), bn=bn, activation=act
            )
            ref, ref_mask = reference64(
                x, mask, weight, b, (1, 2, 2), (1, 2, 2), (1, 2, 2), bn, act or "none"
            )
            assert out.dtype == dtype and out.shape == ref.shape
            assert_close(out, ref, dtype)
            torch.testing.assert_close(new_mask.double(), ref_mask)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    @pytest.mark.parametrize("act", ["none", "relu"])
    def test_nan_inf(self, native: bool, dtype: torch.dtype, act: str) -> None:
        # x * mask is IEEE (0 * NaN = NaN at a hole tap), hole outputs ignore x, ReLU lets NaN through.
        x, mask, weight, bias = nan_case(dtype)
        bn = (torch.rand(6, dtype=dtype) + 0.5, torch.randn(6, dtype=dtype))
        out, new_mask = masked_conv3d(x, mask, weight, bias, 1, 1, 1, bn=bn, activation=act)
        ref, ref_mask = reference64(x, mask, weight, bias, (1, 1, 1), (1, 1, 1), (1, 1, 1), bn, act)
        assert_same_nonfinite(out, ref, dtype)
        holes = (ref_mask == 0).expand_as(ref)
        assert holes.any() and torch.isfinite(out.double()[holes]).all()
        torch.testing.assert_close(new_mask.double(), ref_mask)

    @pytest.mark.parametrize(("c_in", "frames"), [(6, 0), (0, 3)])
    def test_empty_input_refused(self, native: bool, c_in: int, frames: int) -> None:
        # No input voxel (T = 0) or no input channel: refused by the function and the C++ op alike, even
        # where padding would make room for outputs (the reference's convolution cannot take them).
        x, mask = torch.randn(2, c_in, frames, 4, 4), torch.ones(2, 1, frames, 4, 4)
        weight = torch.randn(3, c_in, 1, 3, 3)
        with pytest.raises(ValueError, match="`x` needs at least one"):
            masked_conv3d(x, mask, weight, None, 1, 1, 1)
        with pytest.raises(ValueError, match="`x` needs at least one"):
            torch.ops.combcn.masked_conv3d(*op_args(x, mask, weight))

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    def test_conv_rounded_to_input_dtype(self, native: bool, dtype: torch.dtype) -> None:
        x, mask, weight, bias = rounding_case(dtype)
        out, _ = masked_conv3d(x, mask, weight, bias)
        ref, _ = masked_conv3d_reference(x, mask, weight, bias, None, None, (1, 1, 1), (0, 0, 0), (1, 1, 1))
        assert (ref == 0).all()
        assert (out == 0).all(), out.unique()

    def test_conv_rounded_on_the_float32_conv_path(self, native: bool) -> None:
        # Where oneDNN has no bf16/fp16 convolution the CPU op convolves in float32: it must still round to
        # the input dtype before the epilogue. COMBCN_CPU_LOWP_CONV=0 forces that path (read once, at start).
        script = textwrap.dedent(
            """
            import sys, torch
            sys.path.insert(0, sys.argv[1])
            from test_ops import rounding_case
            from combcn.ops import _ext, masked_conv3d
            assert _ext.load()
            for dtype in (torch.bfloat16, torch.float16):
                out, _ = masked_conv3d(*rounding_case(dtype))
                assert (out == 0).all(), (dtype, out.unique())
            print("ok")
            """
        )
        env = dict(os.environ, COMBCN_CPU_LOWP_CONV="0")
        cmd = [sys.executable, "-c", script, os.path.dirname(__file__)]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0 and run.stdout.split()[-1] == "ok", run.stderr[-2000:]

    def test_relu_is_torch_relu(self, native: bool) -> None:
        # Hole outputs are act(bn_shift): a NaN shift stays NaN, a negative one becomes 0 (no hiding of NaN).
        x, mask, weight, _ = case(c_in=2, c_out=3, shape=(1, 2, 5, 5), mask_kind="hole_blocks")
        shift = torch.tensor([float("nan"), -2.0, 3.0])
        out, new_mask = masked_conv3d(
            x, mask, weight, None, 1, 1, 1, bn=(torch.ones(3), shift), activation="relu"
        )
        holes = new_mask[0, 0] == 0
        assert holes.any()
        assert torch.isnan(out[0, 0][holes]).all()
        assert (out[0, 1][holes] == 0).all() and (out[0, 2][holes] == 3).all()

    def test_autocast_excluded_in_direct_call(self, native: bool) -> None:
        # torch.ops.combcn.masked_conv3d ignores autocast: float32 in, full float32 out.
        x, mask, weight, bias = case(c_in=6, c_out=5, shape=(1, 4, 9, 9))
        ref, _ = reference64(x, mask, weight, bias, (1, 1, 1), (1, 1, 1), (1, 1, 1))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, new_mask = torch.ops.combcn.masked_conv3d(*op_args(x, mask, weight, bias))
        assert out.dtype == torch.float32 and new_mask.dtype == torch.float32
        assert_close(out, ref, torch.float32)

    def test_allow_tf32_switch(self, native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        from combcn.ops.masked_conv3d import TF32_ENV, default_allow_tf32

        monkeypatch.delenv(TF32_ENV, raising=False)
        assert default_allow_tf32() is False
        monkeypatch.setenv(TF32_ENV, "1")
        assert default_allow_tf32() is True
        schema = str(torch.ops.combcn.masked_conv3d.default._schema)
        assert "bool allow_tf32=False" in schema, schema
        # The CPU has no TF32: the switch changes nothing there, bit for bit.
        x, mask, weight, bias = case(c_in=6)
        a = masked_conv3d(x, mask, weight, bias, 1, 1, 1, allow_tf32=True)[0]
        b = masked_conv3d(x, mask, weight, bias, 1, 1, 1, allow_tf32=False)[0]
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))

    @pytest.mark.parametrize(
        ("n", "k", "s", "p", "d"),
        [
            (9, 3, 1, 1, 1),
            (9, 3, 2, 1, 1),
            (10, 3, 2, 1, 1),
            (5, 5, 1, 0, 1),
            (4, 5, 1, 0, 1),
            (4, 5, 2, 0, 1),
            (3, 3, 1, 0, 2),
            (5, 3, 1, 0, 2),
            (2, 3, 3, 1, 1),
            (1, 3, 1, 1, 1),
            (1, 3, 2, 0, 1),
            (6, 4, 2, 1, 1),
        ],
    )
    def test_output_size_one_rule(self, native: bool, n: int, k: int, s: int, p: int, d: int) -> None:
        # Python, the fake kernel and the C++ op compute the same size, or all refuse the input.
        from torch._subclasses.fake_tensor import FakeTensorMode

        from combcn.ops.reference import conv_output_size

        span = n + 2 * p - d * (k - 1)
        expected = (span - 1) // s + 1 if span >= 1 else 0
        assert conv_output_size(n, k, s, p, d) == expected
        x, mask = torch.randn(1, 2, 2, 2, n), torch.ones(1, 1, 2, 2, n)
        weight = torch.randn(3, 2, 1, 1, k)
        args = (x, mask, weight, None, None, None, [1, 1, s], [0, 0, p], [1, 1, d], "none", EPS)
        if expected < 1:
            for call in (
                lambda: torch.ops.combcn.masked_conv3d(*args),
                lambda: masked_conv3d(x, mask, weight, None, (1, 1, s), (0, 0, p), (1, 1, d)),
            ):
                with pytest.raises(ValueError, match="`x`.*smaller than"):
                    call()
            with FakeTensorMode() as mode, pytest.raises(ValueError, match="`x`.*smaller than"):
                torch.ops.combcn.masked_conv3d(
                    *(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args)
                )
            return
        out, new_mask = torch.ops.combcn.masked_conv3d(*args)
        assert out.shape[-1] == new_mask.shape[-1] == expected
        with FakeTensorMode() as mode:
            fake = torch.ops.combcn.masked_conv3d(
                *(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args)
            )
        assert fake[0].shape == out.shape and fake[1].shape == new_mask.shape

    @pytest.mark.parametrize(
        ("change", "argument"),
        [
            (lambda a: a.update(bias=torch.zeros(1)), "`bias`"),
            (lambda a: a.update(bias=torch.zeros(5, dtype=torch.float64)), "`bias`"),
            (lambda a: a.update(bias=torch.zeros(5, 1)), "`bias`"),
            (lambda a: a.update(scale=torch.ones(1), shift=torch.zeros(1)), "`bn_scale`"),
            (lambda a: a.update(scale=torch.ones(5), shift=torch.zeros(1)), "`bn_shift`"),
            (lambda a: a.update(scale=torch.ones(5)), "`bn_scale` and `bn_shift`"),
            (lambda a: a.update(shift=torch.ones(5).bfloat16(), scale=torch.ones(5)), "`bn_shift`"),
            (lambda a: a.update(mask=a["mask"].double()), "`mask`"),
            (lambda a: a.update(mask=a["mask"][:, :, :3]), "`mask`"),
            (lambda a: a.update(mask=a["mask"].expand(2, 2, 4, 6, 6)), "`mask`"),
            (lambda a: a.update(weight=a["weight"][:, :2]), "`weight`"),
            (lambda a: a.update(weight=a["weight"].half()), "`weight`"),
            (lambda a: a.update(weight=a["weight"][..., :0]), "`weight`"),
            (lambda a: a.update(x=a["x"].long()), "`x`"),
            (lambda a: a.update(x=a["x"][0]), "`x`"),
            (lambda a: a.update(stride=[1, 1]), "`stride`"),
            (lambda a: a.update(stride=[1, 0, 1]), "`stride`"),
            (lambda a: a.update(padding=[0, -1, 0]), "`padding`"),
            (lambda a: a.update(dilation=[1, 1, 0]), "`dilation`"),
            (lambda a: a.update(act="gelu"), "`activation`"),
            (lambda a: a.update(eps=-1.0), "`eps`"),
            (lambda a: a.update(eps=float("nan")), "`eps`"),
            (
                lambda a: a.update(
                    x=torch.randn(2, 3, 4, 1, 1), mask=torch.ones(2, 1, 4, 1, 1), padding=[0, 0, 0]
                ),
                "`x`",
            ),
        ],
    )
    def test_exception_direct_call(self, native: bool, change, argument: str) -> None:
        # The C++ op checks every argument itself: a direct torch.ops call cannot read out of bounds.
        a = {
            "x": torch.randn(2, 3, 4, 6, 6),
            "mask": torch.ones(2, 1, 4, 6, 6),
            "weight": torch.randn(5, 3, 3, 3, 3),
            "bias": None,
            "scale": None,
            "shift": None,
            "stride": [1, 1, 1],
            "padding": [1, 1, 1],
            "dilation": [1, 1, 1],
            "act": "relu",
            "eps": EPS,
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
                a["dilation"],
                a["act"],
                a["eps"],
            )


def avx512_present() -> bool:
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            flags = next((line for line in info if line.startswith("flags")), "")
    except OSError:
        pass
    return all(f" {flag}" in flags for flag in ("avx512f", "avx512bw", "avx512vl", "avx512dq"))


class TestCpuRowKernels:
    """The AVX-512 row kernels of the CPU op (native/ops/cpu/simd.h) against its plain loops."""

    @pytest.fixture
    def modes(self, native: bool):
        assert native, f"native op failed to build: {_ext.state()['error']}"
        before = torch.ops.combcn._cpu_simd(-1)
        yield
        torch.ops.combcn._cpu_simd(1 if before == "avx512" else 0)

    def test_switch(self, modes) -> None:
        # Real hardware decides: AVX-512 in use exactly where the CPU has it, and it can be switched off.
        assert torch.ops.combcn._cpu_simd(1) == ("avx512" if avx512_present() else "scalar")
        assert torch.ops.combcn._cpu_simd(0) == "scalar"
        assert torch.ops.combcn._cpu_simd(-1) == "scalar"
        assert "row kernels" in backends()["cpu"]["note"]

    @pytest.mark.skipif(not avx512_present(), reason="needs a CPU with AVX-512 (F, BW, VL, DQ)")
    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    @pytest.mark.parametrize("mask_kind", ["binary", "soft"])
    def test_bit_identical_to_plain_loops(self, modes, dtype: torch.dtype, mask_kind: str) -> None:
        # Same rounding, same order: every output bit agrees, NaN/inf inputs and channel tails included.
        # C_in 4/16/21 and C_out 5/16/33 cover rows shorter than, equal to and past one 16-lane vector.
        gen = torch.Generator().manual_seed(7)
        shape = (2, 6, 13, 15)
        for c_in, c_out, k, stride, dilation, layout in [
            (4, 16, 5, 1, 1, "cl"),
            (16, 33, 3, 2, 2, "cl"),
            (21, 5, 3, 1, 4, "cl"),
            (3, 16, 3, 2, 1, "contiguous"),
        ]:
            x = torch.randn(shape[0], c_in, *shape[1:], generator=gen).to(dtype)
            x[0, 0, 0, 0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
            x[1, -1, 2, 3, 4] = -0.0
            if layout == "cl":
                x = x.contiguous(memory_format=torch.channels_last_3d)
            mask = (torch.rand(shape[0], 1, *shape[1:], generator=gen) > 0.4).to(dtype)
            if mask_kind == "soft":
                mask = mask * torch.rand(mask.shape, generator=gen).to(dtype)
            weight = (torch.randn(c_out, c_in, k, k, k, generator=gen) * 0.1).to(dtype)
            bias, scale, shift = (torch.randn(c_out, generator=gen).to(dtype) for _ in range(3))
            for activation in ("relu", "none"):
                outs = []
                for mode in (0, 1):
                    torch.ops.combcn._cpu_simd(mode)
                    args = (x, mask, weight, bias, stride, "same", dilation)
                    outs.append(masked_conv3d(*args, bn=(scale, shift), activation=activation))
                for plain, vector in zip(outs[0], outs[1], strict=True):
                    assert plain.dtype == vector.dtype == dtype
                    # bit patterns, so NaNs and signed zeros compare too
                    view = torch.int16 if dtype == torch.bfloat16 else torch.int32
                    assert torch.equal(plain.contiguous().view(view), vector.contiguous().view(view)), (
                        c_in,
                        c_out,
                        k,
                        stride,
                        dilation,
                        layout,
                        activation,
                    )

    @pytest.mark.skipif(not avx512_present(), reason="needs a CPU with AVX-512 (F, BW, VL, DQ)")
    def test_bit_identical_on_the_float32_conv_path(self, native: bool) -> None:
        # CPUs without AVX512-BF16 convolve bf16 in float32 and round in the epilogue: there the row
        # kernels read float and write bf16. COMBCN_CPU_LOWP_CONV=0 forces that path; a fresh process,
        # since the switch is read once.
        assert native, f"native op failed to build: {_ext.state()['error']}"
        script = textwrap.dedent(
            """
            import torch
            from combcn.ops import _ext, masked_conv3d
            from combcn.ops.reference import masked_conv3d_reference
            assert _ext.load()
            torch.set_num_threads(1)
            g = torch.Generator().manual_seed(3)
            x = torch.randn(1, 16, 5, 12, 14, generator=g).bfloat16()
            x = x.contiguous(memory_format=torch.channels_last_3d)
            mask = (torch.rand(1, 1, 5, 12, 14, generator=g) > 0.4).bfloat16()
            w = (torch.randn(21, 16, 3, 3, 3, generator=g) * 0.1).bfloat16()
            b, s, t = (torch.randn(21, generator=g).bfloat16() for _ in range(3))
            outs = []
            for mode in (0, 1):
                torch.ops.combcn._cpu_simd(mode)
                outs.append(masked_conv3d(x, mask, w, b, 1, "same", 2, bn=(s, t), activation="relu"))
            for a, v in zip(outs[0], outs[1]):
                assert torch.equal(a.contiguous().view(torch.int16), v.contiguous().view(torch.int16))
            bn = (s.double(), t.double())
            ref = masked_conv3d_reference(x.double(), mask.double(), w.double(), b.double(), *bn,
                                          (1, 1, 1), (2, 2, 2), (2, 2, 2), "relu")
            err = (outs[1][0].double() - ref[0]).abs().max() / ref[0].abs().max()
            print("ok", err.item())
            """
        )
        env = dict(os.environ, COMBCN_CPU_LOWP_CONV="0")
        cmd = [sys.executable, "-c", script]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        err = float(run.stdout.split()[-1])
        assert err < TOLERANCES[torch.bfloat16][0], err  # against float64, relative to the largest output


def test_native_parallel_for_uses_the_threads(native: bool) -> None:
    # at::parallel_for is a header template: built without OpenMP, the extension's passes run on one
    # thread whatever torch.set_num_threads says (it did until 2026-11-29). And one OpenMP runtime only:
    # the extension's libgomp must be torch's.
    assert native, f"native op failed to build: {_ext.state()['error']}"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert torch.ops.combcn._parallel_threads() == 2
        torch.set_num_threads(1)
        assert torch.ops.combcn._parallel_threads() == 1
    finally:
        torch.set_num_threads(threads)
    with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
        runtimes = {line.split()[-1] for line in maps if "libgomp" in line or "libiomp" in line}
    assert len(runtimes) <= 1, runtimes


def test_reference_matches_plain_conv_when_all_valid() -> None:
    # Sanity of the oracle itself: all-valid mask, no padding -> ratio 1 -> plain conv3d + bias.
    x, mask, weight, bias = case(shape=(1, 4, 7, 7), mask_kind="all_valid", dtype=torch.float64)
    out, new_mask = masked_conv3d_reference(
        x, mask, weight, bias, None, None, (1, 1, 1), (0, 0, 0), (1, 2, 2)
    )
    torch.testing.assert_close(out, F.conv3d(x, weight, bias, 1, 0, (1, 2, 2)))
    assert (new_mask == 1).all()
