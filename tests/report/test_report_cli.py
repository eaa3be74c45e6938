"""``eval --report`` and ``train``'s closing report from the command line; progress bars of eval and predict."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import pytest
import torch

from data_tools import progress as progress_mod
from data_tools.store import load_dataset
from detect.cli import main
from detect.engine.inference.evaluator import coco_evaluate, predict_dataset
from detect.engine.training import trainer
from detect.report.train_report import best_checkpoint_report

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


def _perfect(rs) -> list[dict]:
    return [{"image_id": i + 1, "category_id": int(c), "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]),
                                                                float(b[3] - b[1])], "score": 0.9}
            for i, r in enumerate(rs.records) for b, c in zip(r.boxes, r.labels)]


@pytest.fixture(scope="module")
def run(tiny_split, tmp_path_factory) -> dict:
    """A 2-epoch smoke run whose first epoch scores best (evaluation faked: perfect, then nothing)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    val = load_dataset(tiny_split["val"])
    scripted = iter([_perfect(val), []])
    real = trainer.evaluate

    def fake(model, loader, rs, cfg, device):
        real(model, loader, rs, cfg, device)  # the real pass, then the scripted detections
        results = next(scripted)
        return coco_evaluate(rs, results, cfg.eval.max_detections), results

    mp = pytest.MonkeyPatch()
    mp.setattr(trainer, "evaluate", fake)
    logged = io.StringIO()
    try:
        with contextlib.redirect_stdout(logged):
            code = main(["train", "--config", str(SMOKE), f"data.train={tiny_split['train']}",
                         f"data.val={tiny_split['val']}", "data.image_size=64", "train.epochs=2",
                         "train.max_steps=0", f"train.out_dir={out}", "train.report=true"])
    finally:
        mp.undo()
    return {"out": out, "code": code, "log": logged.getvalue(), "val": tiny_split["val"]}


def test_train_closes_with_best_checkpoint_and_its_report(run):
    assert run["code"] == 0
    text = run["log"]
    assert f"{run['out'] / 'best.pt'} (epoch 1) on the val set:" in text
    table = text.split("(epoch 1) on the val set:")[1]
    assert table.lstrip().startswith("AP 1.000")  # best.pt's numbers, not the last epoch's AP 0
    page = run["out"] / "report" / "index.html"
    assert page.is_file() and "report " + str(page) in text
    m = json.loads((run["out"] / "report" / "metrics.json").read_text())
    assert m["headline"]["AP"] == pytest.approx(1.0) and m["facts"]["epoch"] == 1
    assert m["counts"]["class_mae"] == 0.0 and m["at_conf"]["fp"] == 0


def test_closing_report_of_a_resumed_run_evaluates_best_pt(run, tiny_split):
    from detect.config import config_from_dict
    from detect.data import DetectionDataset
    from detect.engine.runtime.checkpoint import load_checkpoint

    cfg = config_from_dict(load_checkpoint(run["out"] / "best.pt")["config"])
    cfg.train.report = False
    ds = DetectionDataset(load_dataset(tiny_split["val"]), 64, None, False)
    lines: list[str] = []
    end = trainer.FitEnd(run["out"], cfg, ds, None, 1, torch.device("cpu"))
    assert best_checkpoint_report(end, lines.append) is None
    assert lines[0].endswith("(epoch 1) on the val set:") and lines[1].startswith("AP ")


def test_eval_report_folders_and_conf(run, tmp_path, capsys):
    weights = str(run["out"] / "best.pt")
    base = ["eval", "--weights", weights, "--data", str(run["val"]), "--device", "cpu"]
    assert main([*base, "--report", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert f"report {tmp_path / 'rep' / 'index.html'}" in out and "(recommended)" in out
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert m["facts"]["checkpoint"] == weights and m["facts"]["ms_per_image"] > 0
    assert m["facts"]["recipe"] == str(run["out"] / "config.yaml")
    rows = list(csv.DictReader((tmp_path / "rep" / "per_class.csv").open()))
    assert [r["class"] for r in rows] == ["brand_a", "brand_b"]
    assert main([*base, "--report", str(tmp_path / "rep"), "--conf", "0.3"]) == 0  # DIR holds a report: DIR2
    m2 = json.loads((tmp_path / "rep2" / "metrics.json").read_text())
    assert m2["conf"] == 0.3 and m2["conf_source"] == "given"
    assert main([*base, "--report", str(tmp_path / "rep3"), "--conf", "2"]) == 1
    assert "--conf must be in [0, 1]" in capsys.readouterr().err
    missing = ["eval", "--weights", str(tmp_path / "nope.pt"), "--data", str(run["val"]), "--report", str(tmp_path / "rep3")]
    assert main(missing) == 1
    assert not (tmp_path / "rep3").exists()  # bad input: no report folder left behind


def test_eval_and_predict_show_progress(run, tiny_split, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress_mod, "show_progress", lambda total, enabled=None, min_items=50: enabled is not False)
    assert main(["eval", "--weights", str(run["out"] / "best.pt"), "--data", str(run["val"]), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "eval:" in err and "/2 [" in err
    assert main(["predict", "--weights", str(run["out"] / "best.pt"), str(tiny_split["root"] / "images"),
                 "--out", str(tmp_path / "pred"), "--device", "cpu", "--no-draw"]) == 0
    err = capsys.readouterr().err
    assert "predict:" in err and "/8 [" in err  # a bar over the 8 images


def test_progress_rule(monkeypatch):
    assert not progress_mod.show_progress(10_000, enabled=False) and progress_mod.show_progress(1, enabled=True)
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal: no bar by default
    assert not progress_mod.show_progress(10_000)
    calls = []

    class Loader(list):
        dataset = range(3)

    class Model(torch.nn.Module):
        def forward(self, images):
            calls.append(images.shape[0])
            return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}]

    target = {"scale": 1.0, "orig_size": (8, 8), "image_id": 1}
    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr", buf)
    predict_dataset(Model(), Loader([(torch.zeros(1, 3, 8, 8), [target])] * 3), torch.device("cpu"), progress=True)
    assert calls == [1, 1, 1] and "eval:" in buf.getvalue() and "/3 [" in buf.getvalue()


def test_off_a_terminal_a_long_stage_prints_one_line_not_a_bar(monkeypatch, tmp_path):
    """A log file gets one closing line per long stage (no carriage-return redraws); short stages say nothing."""
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    assert list(progress_mod.progress(range(60), 60, "predict")) == list(range(60))
    assert log.getvalue().startswith("predict: 60 img in ") and "\r" not in log.getvalue()
    assert log.getvalue().count("\n") == 1
    list(progress_mod.progress(range(5), 5, "predict"))  # short: silent
    with progress_mod.progress_bar(80, "eval") as bar:
        bar.update(80)
    assert log.getvalue().count("\n") == 2 and "eval: 80 img in " in log.getvalue()
    list(progress_mod.progress(range(60), 60, "predict", enabled=False))  # silenced: no line either
    assert log.getvalue().count("\n") == 2
    # the VOC reader's stage goes through the same rule
    from data_tools.convert import convert
    from data_tools.synth import generate
    monkeypatch.setattr("data_tools.formats.voc_folder.PROGRESS_MIN_FILES", 2)
    generate(str(tmp_path / "voc"), 3, 2, 0, (32, 32))
    rs, _, _ = convert(str(tmp_path / "voc"), progress=True)
    assert "reading annotations: 3 file in " in log.getvalue() and len(rs.records) == 3


def test_eval_report_that_fails_midway_is_written_again_in_the_same_folder(run, tmp_path, capsys, monkeypatch):
    """A full disk while the galleries are drawn leaves no half-written report (that the rerun would step past
    to DIR2); a user's own folder is still never written into."""
    import errno

    from data_tools.atomic import WriteError
    from detect.report import build

    def full(rs, dm, out_dir, *a, **k):
        (Path(out_dir) / "crop.jpg").write_bytes(b"half")
        raise WriteError(errno.ENOSPC, f"no space left writing {tmp_path / 'rep' / 'crop.jpg'}")

    base = ["eval", "--weights", str(run["out"] / "best.pt"), "--data", str(run["val"]), "--device", "cpu"]
    with monkeypatch.context() as m:
        m.setattr(build, "build_galleries", full)
        assert main([*base, "--report", str(tmp_path / "rep")]) == 1
    assert "no space left" in capsys.readouterr().err and sorted(tmp_path.iterdir()) == []
    assert main([*base, "--report", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "index.html").is_file() and not (tmp_path / "rep2").exists()
    assert f"report {tmp_path / 'rep' / 'index.html'}" in capsys.readouterr().out
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main([*base, "--report", str(mine)]) == 0
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (tmp_path / "mine2" / "index.html").is_file()
