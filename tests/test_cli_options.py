"""Option values and frame sets: every bad value is one line naming the option, the value and what is
allowed, a non-zero exit, no traceback and nothing written; bad weights files likewise name the file."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from engine_helpers import moving_box_matte, one_thread, tiny_model, write_sequence  # noqa: F401

from combcn.cli import main, options
from combcn.errors import ConfigError, ModelError
from combcn.io.frames import FrameSet

FRAMES = [1001, 1002, 1003, 1004]


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run ``combcn ARGV`` in-process; return (exit code, stderr)."""
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # argparse exits on a usage error
        rc = int(exc.code or 0)
    return rc, capsys.readouterr().err


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from combcn.model import save_weights

    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_weights(tiny_model(), path)
    return path


@pytest.fixture()
def shot(tmp_path: Path) -> tuple[str, str, Path]:
    plate, matte, _ = write_sequence(tmp_path / "in", FRAMES, matte=moving_box_matte(len(FRAMES), 48, 64))
    assert matte is not None
    return plate, matte, tmp_path / "out"


class TestFrameSet:
    def test_smoke(self) -> None:
        assert FrameSet.parse("1001-1005x2,1010").frames == [1001, 1003, 1005, 1010]
        assert FrameSet.parse("1001:1003").frames == [1001, 1002, 1003]

    @pytest.mark.parametrize(
        ("text", "words"),
        [
            ("1008-1001", ["'1008-1001'", "backwards", "1001-1008"]),
            ("1001-1008x0", ["'1001-1008x0'", "step 0"]),
            ("abc", ["'abc'", "START-END"]),
            ("", ["empty"]),
            ("  ", ["empty"]),
            ("1001,,1005", ["''"]),
            ("1-100000000000", ["more than"]),
            ("1001-1008x-2", ["'1001-1008x-2'"]),
        ],
    )
    def test_exception(self, text: str, words: list[str]) -> None:
        with pytest.raises(ConfigError) as exc:
            FrameSet.parse(text)
        message = str(exc.value)
        assert "\n" not in message
        for word in words:
            assert word in message, message


class TestOptionTypes:
    def test_smoke(self) -> None:
        assert options.integer(0, 31)("8") == 8
        assert options.number(0.0, 10.0)("2.5") == 2.5
        assert options.number(0.0, lo_open=True)("0.1") == 0.1
        assert options.frame_set("1001-1002") == "1001-1002"

    @pytest.mark.parametrize(
        ("parse", "text", "word"),
        [
            (options.integer(0, 31), "32", "from 0 to 31"),
            (options.integer(0, 31), "-1", "out of range"),
            (options.integer(1), "1.5", "not a whole number"),
            (options.number(0.0, 10.0), "nan", "not finite"),
            (options.number(0.0, 10.0), "-inf", "not finite"),
            (options.number(0.0, 10.0), "10.5", "out of range"),
            (options.number(0.0, lo_open=True), "0", "> 0"),
            (options.number(), "x", "not a number"),
        ],
    )
    def test_exception(self, parse: object, text: str, word: str) -> None:
        with pytest.raises(argparse.ArgumentTypeError) as exc:
            parse(text)  # type: ignore[operator]
        assert word in str(exc.value) and repr(text) in str(exc.value)


# (argv after the verb's required arguments, the option's name as printed, a word of what is allowed)
BAD_INPAINT = [
    (["--frames", "1008-1001"], "--frames", "backwards"),
    (["--frames", "1001-1008x0"], "--frames", "step"),
    (["--frames", "abc"], "--frames", "START-END"),
    (["--frames", ""], "--frames", "empty"),
    (["--expand", "1000000000"], "--expand", "-1000 to 1000"),
    (["--expand", "2.5"], "--expand", "whole number"),
    (["--margin", "inf"], "--margin", "finite"),
    (["--margin", "11"], "--margin", "0 to 10"),
    (["--margin", "-0.1"], "--margin", "0 to 10"),
    (["--threads", "-4"], "--threads", "1 to"),
    (["--threads", "0"], "--threads", "1 to"),
    (["--overlap", "40"], "--overlap", "0 to 31"),
    (["--overlap", "32"], "--overlap", "0 to 31"),
    (["--feather", "nan"], "--feather", "finite"),
    (["--feather", "-1"], "--feather", "0 to 1000"),
    (["--feather", "5000"], "--feather", "0 to 1000"),
    (["--threshold", "1.5"], "--threshold", "0 to 1"),
    (["--threshold", "nan"], "--threshold", "finite"),
    (["--context", "-1"], "--context", "0 to"),
]


@pytest.mark.parametrize(
    ("extra", "option", "allowed"), BAD_INPAINT, ids=[" ".join(c[0]) for c in BAD_INPAINT]
)
def test_exception_inpaint_bad_value_one_line_nothing_written(
    extra: list[str],
    option: str,
    allowed: str,
    shot: tuple[str, str, Path],
    weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plate, matte, out = shot
    rc, err = _cli(
        capsys, "inpaint", plate, "-m", matte, "-o", str(out / "o.####.exr"), "-w", str(weights), *extra
    )
    assert rc != 0
    lines = _error_lines(err)
    assert len(lines) == 1, err
    assert option in lines[0] and allowed in lines[0], lines[0]
    assert repr(extra[1]) in lines[0] or extra[1] == "" or option == "--frames", lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["serve", "--idle-timeout", "nan"], "--idle-timeout"),
        (["serve", "--cache-mb", "-5"], "--cache-mb"),
        (["serve", "--threads", "-2"], "--threads"),
        (["finetune", "p.####.exr", "-m", "m.####.exr", "-o", "x.pt", "--frames", "9-1"], "--frames"),
        (["finetune", "p.####.exr", "-m", "m.####.exr", "-o", "x.pt", "--lr", "inf"], "--lr"),
        (["finetune", "p.####.exr", "-m", "m.####.exr", "-o", "x.pt", "--steps", "0"], "--steps"),
        (["train", "c.yaml", "--iterations", "-3"], "--iterations"),
        (["train", "c.yaml", "--minutes", "nan"], "--minutes"),
        (["eval", "--window", "0"], "--window"),
        (["eval", "--threads", "-1"], "--threads"),
    ],
)
def test_exception_other_verbs_bad_value_one_line(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, err = _cli(capsys, *argv)
    assert rc != 0
    lines = _error_lines(err)
    assert len(lines) == 1 and option in lines[0], err


def test_exception_bad_values_as_a_real_process(shot: tuple[str, str, Path], weights: Path) -> None:
    """The installed entry point, not only main(): no traceback, one line, exit 2."""
    plate, matte, out = shot
    for extra in (["--frames", "1008-1001"], ["--expand", "1000000000"], ["--margin", "inf"]):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "combcn",
                "inpaint",
                plate,
                "-m",
                matte,
                "-o",
                str(out / "o.####.exr"),
                "-w",
                str(weights),
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert len(_error_lines(proc.stderr)) == 1 and extra[0] in proc.stderr, proc.stderr
        assert not out.exists()


def _wrong_shape(state: dict[str, torch.Tensor]) -> str:
    name = next(k for k, v in state.items() if v.ndim >= 2)
    state[name] = torch.zeros(*state[name].shape[:-1], state[name].shape[-1] + 1)
    return name


def _missing(state: dict[str, torch.Tensor]) -> str:
    name = sorted(state)[-1]
    del state[name]
    return name


def _unexpected(state: dict[str, torch.Tensor]) -> str:
    state["extra.layer.weight"] = torch.zeros(3)
    return "extra.layer.weight"


def _nan(state: dict[str, torch.Tensor]) -> str:
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    return name


def _not_tensor(state: dict[str, torch.Tensor]) -> str:
    name = sorted(state)[0]
    state[name] = 3  # type: ignore[assignment]
    return "not tensors"


BAD_WEIGHTS = {
    "wrong_shape": _wrong_shape,
    "missing": _missing,
    "unexpected": _unexpected,
    "nan": _nan,
    "not_tensor": _not_tensor,
}


@pytest.mark.parametrize("case", sorted(BAD_WEIGHTS))
def test_exception_bad_weights_one_line_names_file_and_layer(
    case: str, tmp_path: Path, weights: Path, shot: tuple[str, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    payload = torch.load(weights, weights_only=True)
    word = BAD_WEIGHTS[case](payload["state_dict"])
    bad = tmp_path / f"{case}.pt"
    torch.save(payload, bad)
    plate, matte, out = shot
    rc, err = _cli(capsys, "inpaint", plate, "-m", matte, "-o", str(out / "o.####.exr"), "-w", str(bad))
    assert rc != 0
    lines = _error_lines(err)
    assert len(lines) == 1, err
    assert str(bad) in lines[0] and word in lines[0], lines[0]
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    "content", ["torch_dict", "garbage", "pickle_of_a_class", "bad_version", "bad_config"]
)
def test_exception_not_a_weights_file_one_line(content: str, tmp_path: Path, weights: Path) -> None:
    from combcn.model import load_model

    bad = tmp_path / "bad.pt"
    payload = torch.load(weights, weights_only=True)
    if content == "bad_version":
        torch.save({**payload, "format_version": "x"}, bad)
    elif content == "bad_config":
        torch.save({**payload, "config": {**payload["config"], "window": 0}}, bad)
    elif content == "torch_dict":
        torch.save({"conv.weight": torch.zeros(3)}, bad)
    elif content == "garbage":
        bad.write_bytes(b"\x00\x01 not a zip " * 20)
    else:
        torch.save({"format": argparse.Namespace(x=1)}, bad)  # refused by weights_only loading
    with pytest.raises(ModelError) as exc:
        load_model(bad)
    assert str(bad) in str(exc.value) and "\n" not in str(exc.value), str(exc.value)
