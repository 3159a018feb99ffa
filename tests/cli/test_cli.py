"""The ``combcn`` dispatcher, ``combcn info`` and the error hierarchy."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from combcn import errors
from combcn.cli import VERBS, main


def test_help_lists_every_built_verb(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "info" in out
    assert "VERB" in out


def test_info_json_reports_versions_backends_and_device(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"] == torch.__version__
    assert info["openimageio"]
    assert info["av"]
    assert {"reference", "cpu", "cuda"} <= set(info["op_backends"])
    assert sum(bool(b["active"]) for b in info["op_backends"].values()) >= 1
    assert info["device"]["default"] in ("cpu", "cuda")
    assert "weights" in info


def test_python_m_combcn_info_runs_as_a_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "combcn", "info"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "op backends" in proc.stdout
    assert "weights" in proc.stdout


def test_user_error_prints_one_line_and_no_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from combcn.cli import info

    def broken(args: object) -> int:
        raise errors.InputError("frame is missing; render it first", path="plate.1003.exr", frame=1003)

    monkeypatch.setattr(info, "run", broken)
    assert main(["info"]) == errors.CombcnError.exit_code
    err = capsys.readouterr().err
    assert "plate.1003.exr, frame 1003: frame is missing" in err
    assert "Traceback" not in err


def test_unknown_verb_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-verb"])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    "cls", [errors.InputError, errors.ConfigError, errors.OutputError, errors.ModelError]
)
def test_error_classes_share_one_base(cls: type[errors.CombcnError]) -> None:
    err = cls("bad thing; do this")
    assert isinstance(err, errors.CombcnError)
    assert str(err) == "bad thing; do this"


def test_every_registered_verb_has_a_summary() -> None:
    assert all(summary for summary in VERBS.values())


def test_info_names_the_plate_network_of_the_weights(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from combcn.cli import info

    shipped = {"name": "w", "path": "/x/w.pt", "iterations": 5}
    shipped["plate"] = {"training_clips": ["a", "b"], "samples": 40, "iterations": 300, "wall_time_h": 0.2}
    real = info.collect

    def with_plate() -> dict:
        out = real()
        out["weights"] = shipped
        return out

    monkeypatch.setattr(info, "collect", with_plate)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "plate net    CombCN at plate resolution: 2 clips, 40 samples, 300 iterations, 0.2 h" in out
