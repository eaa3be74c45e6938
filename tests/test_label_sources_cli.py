"""``retail-detect train data.train=<a VOC folder>`` works as written: label folders and files of any format are
converted (once, cached) wherever a dataset .pkl is taken, val / eval labels in the training class order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_tools.formats.export import export_records
from data_tools.records import RecordSet
from data_tools.sources import load_any
from data_tools.store import save_dataset
from data_tools.synth import generate
from detect.cli import main

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def voc_folder(tmp_path_factory) -> Path:
    """8 synthetic 96x80 shelf photos of 2 brands with labelImg VOC XML."""
    root = tmp_path_factory.mktemp("voc") / "shelves"
    generate(str(root), 8, 2, 5, (96, 80))
    return root


def test_train_on_a_voc_folder_val_on_yolo_eval_on_csv(voc_folder, tmp_path, capsys):
    rs = load_any(voc_folder, log=lambda _: None)
    export_records(rs.subset([6, 7]), "yolo", tmp_path / "val_yolo")
    out = tmp_path / "run"
    assert main(["train", "--config", str(SMOKE), f"data.train={voc_folder}", f"data.val={tmp_path / 'val_yolo'}",
                 "data.image_size=64", "train.epochs=1", "train.max_steps=2", f"train.out_dir={out}"]) == 0
    printed = capsys.readouterr().out
    assert f"{voc_folder}: voc labels converted earlier, read from the cache" in printed  # by load_any above
    assert f"converted {tmp_path / 'val_yolo'} (yolo, detected:" in printed
    assert "training ssd" in printed and (out / "best.pt").is_file()
    assert not any(p.suffix == ".pkl" for p in voc_folder.rglob("*"))  # the cache lives elsewhere
    # eval on labels of a third format whose class order differs: converted in the checkpoint's order
    swapped = RecordSet(list(reversed(rs.class_names)), rs.image_root, [r for r in rs.subset([6, 7]).records], {})
    for r in swapped.records:
        r.labels = 3 - r.labels
    export_records(swapped, "csv", tmp_path / "val_csv")
    assert main(["eval", "--weights", str(out / "best.pt"), "--data", str(tmp_path / "val_csv"), "--device", "cpu",
                 "--json", str(tmp_path / "m.json")]) == 0
    assert set(json.loads((tmp_path / "m.json").read_text())["per_class"]) == set(rs.class_names)
    # a .pkl in another class order is refused, saying how to fix it
    save_dataset(swapped, tmp_path / "swapped.pkl")
    capsys.readouterr()
    assert main(["eval", "--weights", str(out / "best.pt"), "--data", str(tmp_path / "swapped.pkl"),
                 "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "in another order" in err and "--classes-from TRAIN.pkl" in err and err.count("\n") == 1
    assert f"-o {tmp_path / 'swapped-reordered.pkl'} " in err  # a new file, not over the one given
