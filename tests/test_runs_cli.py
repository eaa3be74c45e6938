"""Nothing the user owns is lost: run folders, resume from the checkpoint alone, outputs that clash with inputs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from detect.cli import main

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def _train(split: dict, out: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(SMOKE), f"data.train={split['train']}", f"data.val={split['val']}",
            "data.image_size=64", "train.epochs=1", "train.max_steps=0", "train.device=cpu", f"train.out_dir={out}",
            *extra]


@pytest.fixture(scope="module")
def two_runs(tiny_split, tmp_path_factory):
    """The same train command twice: ``(base folder, printed outputs)``."""
    out = tmp_path_factory.mktemp("runs") / "ssd"
    assert main(_train(tiny_split, out)) == 0
    first = torch.load(out / "last.pt", weights_only=True)["rng"]
    assert main(_train(tiny_split, out, "train.seed=1")) == 0
    return out, first


def test_train_twice_keeps_both_runs(two_runs):
    out, first_rng = two_runs
    second = out.with_name("ssd2")
    assert torch.equal(torch.load(out / "last.pt", weights_only=True)["rng"], first_rng)  # run 1 untouched
    ck2 = torch.load(second / "last.pt", weights_only=True)
    assert ck2["config"]["train"]["out_dir"] == str(second) and ck2["config"]["train"]["seed"] == 1
    assert json.loads((second / "summary.json").read_text())["out_dir"] == str(second)
    assert not (out / ".lock").exists() and not (second / ".lock").exists()


def test_resume_needs_only_the_checkpoint(two_runs, capsys):
    out, _ = two_runs
    capsys.readouterr()
    # overrides before and after --resume; the recipe comes from the checkpoint
    assert main(["train", "train.epochs=2", "--resume", str(out / "last.pt"), "train.device=cpu"]) == 0
    printed = capsys.readouterr().out
    assert f"run folder {out}:" in printed and "resumed from" in printed
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2
    assert not out.with_name("ssd3").exists()
    # the closing line counts this session's part: 1 step of 4 images, not the 2 steps of the whole run (issue 23)
    assert "2 epochs, 2 steps (1 in this session), " in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_per_s"] * summary["seconds"] == pytest.approx(4)
    assert re.search(r"\(best\), \S+last\.pt \(last\) \(\d+\.\d MB on disk\); metrics ", printed)


def test_resume_refuses_model_and_data_changes(two_runs, tiny_split, capsys):
    out, _ = two_runs
    capsys.readouterr()
    assert main(["train", "--resume", str(out / "last.pt"), "train.lr=0.5", "data.image_size=96"]) == 1
    err = capsys.readouterr().err
    assert "cannot resume" in err and "train.lr (0.001 -> 0.5)" in err and "data.image_size (64 -> 96)" in err
    yolo = Path(SMOKE).parents[0] / "yolo.yaml"
    assert main(["train", "--config", str(yolo), "--resume", str(out / "last.pt"),
                 f"data.train={tiny_split['train']}", f"data.val={tiny_split['val']}"]) == 1
    err = capsys.readouterr().err
    assert "model.name ('ssd' -> 'yolo')" in err and err.count("\n") == 1


def test_resume_of_a_damaged_checkpoint_is_one_line(two_runs, tmp_path, capsys):
    out, _ = two_runs
    broken = tmp_path / "last.pt"
    broken.write_bytes((out / "last.pt").read_bytes()[:1000])
    assert main(["train", "--resume", str(broken)]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {broken} is unusable: the file is truncated (zip central directory missing)\n"
    no_names = tmp_path / "nonames.pt"
    ck = torch.load(out / "last.pt", weights_only=True)
    del ck["class_names"]
    torch.save(ck, no_names)
    assert main(["train", "--resume", str(no_names)]) == 1
    assert "missing 'class_names'" in capsys.readouterr().err


def test_zero_epochs_claim_no_checkpoint(tiny_split, tmp_path, capsys):
    assert main(_train(tiny_split, tmp_path / "r", "train.epochs=0")) == 0
    printed = capsys.readouterr().out
    assert "no epoch trained, no checkpoint written" in printed and ".pt" not in printed
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["last"] is None


def test_outputs_that_are_inputs_are_refused_before_work(two_runs, tiny_split, tmp_path, capsys):
    out, _ = two_runs
    weights = out / "best.pt"
    data = tiny_split["val"]
    before = {p: p.read_bytes() for p in (weights, data)}
    capsys.readouterr()
    assert main(["eval", "--weights", str(weights), "--data", str(data), "--json", str(data)]) == 1
    assert "--json" in capsys.readouterr().err
    link = tmp_path / "w_link.pt"
    link.symlink_to(weights)
    assert main(["eval", "--weights", str(link), "--data", str(data), "--json", str(weights)]) == 1
    assert "it is one of the input files" in capsys.readouterr().err
    assert main(["export", "--weights", str(weights), "--out", str(out / "." / "best.pt")]) == 1
    assert "it is one of the input files" in capsys.readouterr().err
    other = tmp_path / "other.pt"  # (last.pt is best.pt here: one epoch, one file, two names)
    other.write_bytes((out / "last.pt").read_bytes())
    assert main(["export", "--weights", str(weights), "--format", "onnx", "--out", str(other)]) == 1
    assert "it is a zip archive (e.g. a .pt), not an ONNX model" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before


def test_eval_json_printed_or_written(two_runs, tiny_split, tmp_path, capsys):
    """``--json`` alone: the metrics on stdout (the table on stderr); ``--json FILE`` replaces only its own files."""
    out, _ = two_runs
    base = ["eval", "--weights", str(out / "best.pt"), "--data", str(tiny_split["val"]), "--device", "cpu"]
    capsys.readouterr()
    assert main([*base, "--json"]) == 0
    printed = capsys.readouterr()
    assert set(json.loads(printed.out)["per_class"]) == {"brand_a", "brand_b"} and "AP" in printed.err
    metrics = tmp_path / "m.json"
    for _ in range(2):  # the second run replaces the first one's metrics, results and plot
        assert main([*base, "--json", str(metrics)]) == 0
    assert (tmp_path / "m_results.json").is_file() and (tmp_path / "m_pr.png").is_file()
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    capsys.readouterr()
    assert main([*base, "--json", str(notes)]) == 1
    assert "--json" in capsys.readouterr().err and notes.read_text() == '{"mine": 1}'


def test_predict_twice_writes_a_fresh_folder(two_runs, tiny_split, tmp_path, capsys):
    out, _ = two_runs
    images = sorted((tiny_split["root"] / "images").glob("*.jpg"))
    pred = tmp_path / "pred"
    assert main(["predict", "--weights", str(out / "best.pt"), str(images[0]), str(images[1]), "--out", str(pred),
                 "--device", "cpu", "--conf", "0.01"]) == 0
    assert main(["predict", "--weights", str(out / "best.pt"), str(images[2]), "--out", str(pred),
                 "--device", "cpu", "--conf", "0.01"]) == 0
    assert len(list((pred / "images").rglob("*.jpg"))) == 2  # the first run's drawings, untouched
    assert [p.name for p in (tmp_path / "pred2" / "images").rglob("*.jpg")] == [images[2].name]
    assert main(["predict", "--weights", str(out / "best.pt"), str(images[0]), "--out", str(pred),
                 "--conf", "nan"]) == 1
    assert "--conf must be in [0, 1], got nan" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path, capsys):
    missing = tmp_path / "missing.pt"
    assert main(["eval", "--weights", str(missing), "--data", str(missing)]) == 1
    capsys.readouterr()
    assert main(["eval", "--weights", str(missing), "--data", str(missing), "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "FileNotFoundError: checkpoint not found" in err
    assert err.splitlines()[-1] == f"error: checkpoint not found: {missing}"


def test_predict_skips_fifos_and_symlink_loops(two_runs, tiny_split, tmp_path, capsys):
    import os

    out, _ = two_runs
    src = tmp_path / "photos"
    src.mkdir()
    good = sorted((tiny_split["root"] / "images").glob("*.jpg"))[0]
    (src / "good.jpg").write_bytes(good.read_bytes())
    os.mkfifo(src / "pipe.jpg")  # reading it would block forever
    (src / "loop_a.jpg").symlink_to(src / "loop_b.jpg")
    (src / "loop_b.jpg").symlink_to(src / "loop_a.jpg")
    (src / "zero.jpg").symlink_to("/dev/zero")
    assert main(["predict", "--weights", str(out / "best.pt"), str(src), "--out", str(tmp_path / "p"),
                 "--device", "cpu"]) == 0
    pred = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert [Path(e["path"]).name for e in pred["images"]] == ["good.jpg"]
    reasons = {Path(e["file"]).name: e["reason"] for e in pred["errors"]}
    assert set(reasons) == {"pipe.jpg", "loop_a.jpg", "loop_b.jpg", "zero.jpg"}
    assert "not a regular file" in reasons["pipe.jpg"] and "not a regular file" in reasons["zero.jpg"]


def test_eval_on_labels_of_classes_the_checkpoint_does_not_know_warns(two_runs, tiny_split, tmp_path, capsys):
    """CSV labels whose classes are all unknown to the checkpoint: converted in its order, every box is dropped;
    eval says so in one warning line (before: "AP n/a" for every class and nothing else)."""
    import shutil

    out, _ = two_runs
    folder = tmp_path / "other"
    folder.mkdir()
    images = sorted((tiny_split["root"] / "images").glob("*"))[:2]
    for img in images:
        shutil.copy(img, folder / img.name)
    (folder / "boxes.csv").write_text("image,x1,y1,x2,y2,label\n" + "".join(
        f"{img.name},1,1,20,20,{label}\n" for img in images for label in ("cola", "chips")))
    capsys.readouterr()
    assert main(["eval", "--weights", str(out / "best.pt"), "--data", str(folder / "boxes.csv"), "--device", "cpu"]) == 0
    printed = capsys.readouterr()
    [warning] = [line for line in (printed.out + printed.err).splitlines() if line.startswith("warning:")]
    assert f"has no boxes of a class the checkpoint {out / 'best.pt'} knows: 4 boxes of 2 classes" in warning
    assert "'cola'" in warning and "'chips'" in warning and "brand_a, brand_b" in warning and "every AP is n/a" in warning


def test_checkpoints_store_absolute_data_paths(tiny_split, tmp_path, monkeypatch, capsys):
    """A run trained with a relative data.train resumes from another folder, and naming the same file by its
    absolute path is no change of setting (issue 23)."""
    monkeypatch.chdir(tiny_split["root"])
    out = tmp_path / "rel"
    assert main(["train", "--config", str(SMOKE), "data.train=train.pkl", "data.val=./val.pkl", "data.image_size=64",
                 "train.epochs=1", "train.device=cpu", f"train.out_dir={out}"]) == 0
    ck = torch.load(out / "last.pt", weights_only=True)
    assert (ck["config"]["data"]["train"], ck["config"]["data"]["val"]) == (str(tiny_split["train"]),
                                                                        str(tiny_split["val"]))
    assert f"train: {tiny_split['train']}" in (out / "config.yaml").read_text()
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["train", "--resume", str(out / "last.pt"), "train.device=cpu",
                 f"data.train={os.path.relpath(tiny_split['train'])}", f"data.val={tiny_split['val']}"]) == 0
    assert "nothing to train" in capsys.readouterr().out


def test_old_relative_paths_match_the_same_file_named_from_elsewhere(two_runs, tiny_split, tmp_path, monkeypatch):
    """A checkpoint written before paths were stored absolute holds ``train.pkl``: resuming it from another
    folder with the file's full path is allowed (and that path used); another file is refused."""
    from detect.config import ConfigError
    from detect.engine.training.resume import resume_config

    out, _ = two_runs
    old = tmp_path / "old"
    old.mkdir()
    ck = torch.load(out / "last.pt", weights_only=True)
    ck["config"]["data"]["train"] = "train.pkl"
    torch.save(ck, old / "last.pt")
    cfg = resume_config(old / "last.pt", None, [f"data.train={tiny_split['train']}"])
    assert cfg.data.train == str(tiny_split["train"])
    with pytest.raises(ConfigError, match="data.train"):
        resume_config(old / "last.pt", None, [f"data.train={tiny_split['val']}"])


def test_resume_of_a_checkpoint_older_than_last_is_refused(two_runs, tmp_path, capsys):
    """``--resume best.pt`` of epoch 1 when last.pt beside it is at epoch 2 would replace last.pt: refused in
    one line that says which is newer and what to do; the files stay as they were (issue 23)."""
    out, _ = two_runs
    run = tmp_path / "run"
    run.mkdir()
    ck = torch.load(out / "last.pt", weights_only=True)
    torch.save({**ck, "epoch": 2, "step": ck["step"] + 1}, run / "last.pt")
    torch.save(ck, run / "best.pt")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    capsys.readouterr()
    assert main(["train", "--resume", str(run / "best.pt"), "train.epochs=3", "train.device=cpu"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{run / 'last.pt'} beside it is newer, at epoch 2" in err
    assert f"resume {run / 'last.pt'} instead, or copy best.pt into a new folder" in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
