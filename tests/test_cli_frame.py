"""The frame both CLIs run in (:mod:`data_tools.cli_frame`): exit codes, one-line user errors, tracebacks of
bugs, ``--debug``, broken pipes, interrupts, ``--version``, a verb's own usage, the shared flag spellings."""

from __future__ import annotations

import os

import pytest

import detect.cli as detect_cli
import detect.verbs.retail_data as data_cli
from data_tools.cli_frame import EXIT_BUG, package_version, parse_size
from data_tools.errors import CannotRun, InvalidInput, UserError, is_user_error
from data_tools.outputs import OutputRefused
from data_tools.planogram import PlanogramError

# (module, verb function to replace, argv that reaches it)
CLIS = {
    "retail-data": (data_cli, "cmd_stats", ["stats", "x.pkl"]),
    "retail-detect": (detect_cli, "_eval", ["eval", "--weights", "w.pt", "--data", "d.pkl"]),
}


def _run(monkeypatch, name: str, exc: BaseException, *extra: str) -> int:
    module, verb, argv = CLIS[name]

    def raising(args):
        raise exc

    monkeypatch.setattr(module, verb, raising)
    return module.main([*extra, *argv])


@pytest.mark.parametrize("name", CLIS)
def test_a_bug_shows_its_traceback_and_is_not_a_user_error(monkeypatch, capsys, name):
    assert _run(monkeypatch, name, KeyError("boxes")) == EXIT_BUG != 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError: 'boxes'" in err
    assert err.rstrip().splitlines()[-1].startswith(f"error: a bug in {name} (KeyError)")
    for bug in (ValueError("x"), RuntimeError("y"), OSError(5, "I/O error")):  # no longer user errors wholesale
        assert _run(monkeypatch, name, bug) == EXIT_BUG
        assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("name", CLIS)
@pytest.mark.parametrize("exc", [UserError("bad\nthing"), InvalidInput("bad thing"), CannotRun("bad thing"),
                                 OutputRefused("bad thing"), FileNotFoundError(2, "No such file", "bad thing"),
                                 OSError(28, "bad thing: no space left")])
def test_a_user_error_is_one_line_exit_1(monkeypatch, capsys, name, exc):
    assert _run(monkeypatch, name, exc) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "bad thing" in err and "Traceback" not in err


@pytest.mark.parametrize("name", CLIS)
def test_debug_shows_the_traceback_of_a_user_error_anywhere_on_the_line(monkeypatch, capsys, name):
    module, verb, argv = CLIS[name]
    for where in ("first", "last"):
        def raising(args):
            assert args.debug
            raise InvalidInput("--conf must be in [0, 1]")

        monkeypatch.setattr(module, verb, raising)
        assert module.main(["--debug", *argv] if where == "first" else [*argv, "--debug"]) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and "InvalidInput: --conf must be in [0, 1]" in err
        assert err.rstrip().splitlines()[-1] == "error: --conf must be in [0, 1]"


@pytest.mark.parametrize("name", CLIS)
def test_several_problems_are_one_line_each(monkeypatch, capsys, name):
    assert _run(monkeypatch, name, PlanogramError(["plan.yaml:3: row 2 is empty", "plan.yaml:5: unknown SKU"])) == 1
    assert capsys.readouterr().err.splitlines() == ["error: plan.yaml:3: row 2 is empty",
                                                    "error: plan.yaml:5: unknown SKU"]


@pytest.mark.parametrize("name", CLIS)
def test_broken_pipe_is_quiet_and_interrupt_is_one_line(monkeypatch, capsys, name):
    monkeypatch.setattr(os, "dup2", lambda *a: None)  # keep pytest's captured stdout
    assert _run(monkeypatch, name, BrokenPipeError()) == 141
    assert capsys.readouterr().err == ""
    assert _run(monkeypatch, name, KeyboardInterrupt()) == 130
    assert capsys.readouterr().err == "error: interrupted\n"


@pytest.mark.parametrize("name", CLIS)
def test_version_from_the_package_metadata(capsys, name):
    module = CLIS[name][0]
    assert module.main(["--version"]) == 0
    assert capsys.readouterr().out == f"{name} {package_version()}\n"
    assert package_version() == "0.1.0"


@pytest.mark.parametrize("name, argv, usage", [
    ("retail-data", ["stats", "x.pkl", "--jsn"], "usage: retail-data stats"),
    ("retail-data", ["convert", "src", "-o", "d.pkl", "--strcit"], "usage: retail-data convert"),
    ("retail-detect", ["eval", "--weights", "w.pt", "--data", "d.pkl", "--jsno", "m.json"], "usage: retail-detect eval"),
    ("retail-detect", ["predict", "--weights", "w.pt", "a.jpg", "--cnof", "0.3"], "usage: retail-detect predict"),
    ("retail-detect", ["train", "--config", "c.yaml", "--resume", "x.pt", "--epoch", "3"], "usage: retail-detect train"),
])
def test_a_mistyped_flag_prints_the_usage_of_its_verb(capsys, name, argv, usage):
    assert CLIS[name][0].main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(usage) and "unrecognized arguments: " in err


def test_train_still_takes_overrides_after_a_flag(monkeypatch):
    seen = []
    monkeypatch.setattr(detect_cli, "_train", lambda args: seen.append(args.overrides) or 0)
    assert detect_cli.main(["train", "a.b=1", "--resume", "x.pt", "c.d=2"]) == 0
    assert seen == [["a.b=1", "c.d=2"]]


def test_out_flag_spellings():
    p = data_cli._parser()
    for flag in ("-o", "--out", "--output"):  # --out as in retail-detect; --output kept for scripts
        assert p.parse_args(["convert", "src", flag, "d.pkl"]).output == "d.pkl"
        assert p.parse_args(["split", "d.pkl", flag, "splits"]).output == "splits"
        assert p.parse_args(["synth", flag, "shelves"]).output == "shelves"
    q = detect_cli.build_parser()
    for flag in ("-o", "--out"):
        assert q.parse_args(["predict", "--weights", "w.pt", "a.jpg", flag, "pred"]).out == "pred"
        assert q.parse_args(["audit", "--weights", "w.pt", "a.jpg", flag, "aud"]).out == "aud"
        assert q.parse_args(["export", "--weights", "w.pt", flag, "m.onnx"]).out == "m.onnx"
        assert q.parse_args(["tune", "--config", "c.yaml", "--grid", "train.lr=1,2", flag, "t"]).out == "t"


def test_json_flag_alone_or_with_a_file():
    p = data_cli._parser()
    assert p.parse_args(["stats", "d.pkl", "--json"]).json == "-"
    assert p.parse_args(["stats", "d.pkl", "--json", "s.json"]).json == "s.json"
    assert p.parse_args(["stats", "d.pkl"]).json is None
    q = detect_cli.build_parser()
    base = ["eval", "--weights", "w.pt", "--data", "d.pkl"]
    assert q.parse_args([*base, "--json"]).json == "-"
    assert q.parse_args([*base, "--json", "--device", "cpu"]).json == "-"
    assert q.parse_args([*base, "--json", "m.json"]).json == "m.json"
    assert q.parse_args(["bench", "--json"]).json == "-" and q.parse_args(["bench", "--json", "b.json"]).json == "b.json"


def test_size_forms(capsys):
    assert parse_size("320x240") == (320, 240) and parse_size("320") == (320, 320) and parse_size("64X48") == (64, 48)
    for bad in ("big", "64x", "1x2x3", ""):
        with pytest.raises(UserError, match="must look like"):
            parse_size(bad)
    q = detect_cli.build_parser()
    for text in ("320", "320x320"):
        assert q.parse_args(["export", "--weights", "w.pt", "--size", text]).size == 320
        assert q.parse_args(["bench", "--size", text]).size == 320
    assert detect_cli.main(["export", "--weights", "w.pt", "--size", "320x240"]) == 2
    assert "the model input is square" in capsys.readouterr().err


def test_user_error_family():
    from data_tools.atomic import WriteError
    from data_tools.coco import CocoFormatError
    from data_tools.images import ImageError
    from data_tools.store import DatasetFileError
    from data_tools.userfiles import UnsafeFile
    from detect.config import ConfigError
    from detect.data.proposals import ProposalsError
    from detect.engine.runtime.checkpoint import CheckpointError

    for cls in (ConfigError, CheckpointError, PlanogramError, ProposalsError, DatasetFileError, CocoFormatError,
                OutputRefused):
        assert issubclass(cls, UserError) and issubclass(cls, ValueError), cls
    assert issubclass(WriteError, UserError) and issubclass(WriteError, OSError)
    assert issubclass(ImageError, UserError) and issubclass(UnsafeFile, UserError)
    assert is_user_error(PermissionError(13, "denied")) and is_user_error(IsADirectoryError(21, "dir"))
    assert not is_user_error(ValueError("x")) and not is_user_error(OSError(5, "I/O")) and not is_user_error(KeyError())
