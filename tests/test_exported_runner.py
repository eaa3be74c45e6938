"""Running exported models: predict / eval from the file match the checkpoint, bad model files are one line each,
and the runner works in a virtual environment without torch (slow lane)."""

from __future__ import annotations

import builtins
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from detect.cli import main
from detect.engine.runtime.exported import META_KEY
from tests.test_export import HAS_OPENVINO, perturbed_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exp")
    weights = perturbed_checkpoint(folder / "ssd.pt", "ssd", names=["brand_a", "brand_b"])
    assert main(["export", "--weights", str(weights), "--out", str(folder / "ssd.onnx"), "--no-check"]) == 0
    return {"pt": weights, "onnx": folder / "ssd.onnx", "dir": folder}


def _photos(tmp_path: Path) -> list[str]:
    folder = tmp_path / "photos"
    folder.mkdir(exist_ok=True)
    return [str(folder)]


def _err(capsys) -> str:
    return capsys.readouterr().err.strip()


def test_predict_and_eval_from_the_file_match_the_checkpoint(exported, tiny_split, tmp_path, capsys):
    photos = tiny_split["root"] / "images"
    outs = {}
    for kind in ("pt", "onnx"):
        out = tmp_path / kind
        assert main(["predict", "--weights", str(exported[kind]), str(photos), "-o", str(out), "--conf", "0.05",
                     "--no-draw", "--save-labels", "voc"]) == 0
        outs[kind] = json.loads((out / "predictions.json").read_text())
        assert (out / "labels").is_dir()
    a, b = outs["pt"]["images"], outs["onnx"]["images"]
    assert len(a) == len(b) > 0 and sum(len(e["detections"]) for e in a) > 0
    for x, y in zip(a, b):
        assert [d["label"] for d in x["detections"]] == [d["label"] for d in y["detections"]]
        for p, q in zip(x["detections"], y["detections"]):
            assert np.abs(np.subtract(p["box"], q["box"])).max() < 1.0 and abs(p["score"] - q["score"]) < 1e-3
    metrics = {}
    for kind in ("pt", "onnx"):
        js = tmp_path / f"{kind}_metrics.json"
        assert main(["eval", "--weights", str(exported[kind]), "--data", str(tiny_split["val"]), "--json", str(js)]) == 0
        metrics[kind] = json.loads(js.read_text())
    assert abs(metrics["pt"]["AP"] - metrics["onnx"]["AP"]) < 1e-3


def test_not_a_model_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "photo.onnx"
    bad.write_bytes(b"\xff\xd8\xff\xe0 a jpeg")
    assert main(["predict", "--weights", str(bad), *_photos(tmp_path), "-o", str(tmp_path / "o")]) == 1
    err = _err(capsys)
    assert err.startswith(f"error: {bad}: not a readable ONNX model") and "\n" not in err
    other = tmp_path / "model.bin"
    other.write_bytes(b"\0" * 16)
    assert main(["eval", "--weights", str(other), "--data", str(tmp_path)]) == 1
    err = _err(capsys)  # a .bin is not an export: read as a checkpoint, refused in its own one line
    assert err.startswith(f"error: {other}") and "\n" not in err


def test_corrupt_truncated_model_is_one_line(exported, tmp_path, capsys):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(exported["onnx"].read_bytes()[:5000])
    assert main(["predict", "--weights", str(cut), *_photos(tmp_path), "-o", str(tmp_path / "o")]) == 1
    err = _err(capsys)
    assert err.startswith(f"error: {cut}: not a readable ONNX model") and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_model_of_an_older_version_or_another_tool_is_one_line(exported, tmp_path, capsys):
    proto = onnx.load(str(exported["onnx"]))
    for prop in list(proto.metadata_props):
        proto.metadata_props.remove(prop)
    foreign = tmp_path / "foreign.onnx"
    onnx.save(proto, str(foreign))
    assert main(["predict", "--weights", str(foreign), *_photos(tmp_path), "-o", str(tmp_path / "o")]) == 1
    assert "no retail-detect metadata" in _err(capsys)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps({"format_version": 1, "class_names": ["a"]})
    old = tmp_path / "old.onnx"
    onnx.save(proto, str(old))
    assert main(["predict", "--weights", str(old), *_photos(tmp_path), "-o", str(tmp_path / "o")]) == 1
    assert "another version (format 1" in _err(capsys)


def test_another_input_size_is_refused(exported, tmp_path):
    from data_tools.errors import InvalidInput
    from detect.engine.inference.predictor import Predictor

    with pytest.raises(InvalidInput, match="exported for 96 px inputs, not 128"):  # noqa: PT012
        Predictor.from_weights(exported["onnx"], image_size=128)


def test_openvino_missing_is_one_line(exported, tmp_path, monkeypatch, capsys):
    xml = tmp_path / "m.xml"
    xml.write_text('<?xml version="1.0"?>\n<net name="x" version="11"></net>\n')
    xml.with_suffix(".bin").write_bytes(b"")
    real_import = builtins.__import__

    def no_openvino(name, *a, **k):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    assert main(["predict", "--weights", str(xml), *_photos(tmp_path), "-o", str(tmp_path / "o")]) == 1
    assert 'needs openvino: pip install -e ".[openvino]"' in _err(capsys)
    assert main(["export", "--weights", str(exported["pt"]), "--format", "openvino", "--out", str(tmp_path / "n.xml")]) == 1
    assert 'needs openvino' in _err(capsys)
    assert not (tmp_path / "n.xml").exists()


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino not installed")
def test_openvino_without_its_bin_is_one_line(exported, tmp_path, capsys):
    xml = tmp_path / "m.xml"
    assert main(["export", "--weights", str(exported["pt"]), "--format", "openvino", "--out", str(xml), "--no-check"]) == 0
    xml.with_suffix(".bin").unlink()
    assert main(["predict", "--weights", str(xml), *_photos(tmp_path), "-o", str(tmp_path / "o")]) == 1
    assert "m.bin are missing" in _err(capsys)


@pytest.mark.slow
def test_runner_needs_no_torch(exported, tiny_split, tmp_path):
    """A virtual environment with numpy, onnxruntime and Pillow only: the runner imports no torch and gives the
    detections the PyTorch verbs give."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "numpy", "onnxruntime", "pillow"], check=True, timeout=900)
    photo = sorted((tiny_split["root"] / "images").rglob("*.jpg"))[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(ROOT)
    code = ("import sys, runpy; sys.argv = ['x', {!r}, {!r}, '--conf', '0.05']; "
            "runpy.run_module('detect.engine.runtime.exported', run_name='__main__')".format(str(exported["onnx"]), str(photo)))
    check = subprocess.run([str(py), "-c", "import torch"], env=env, capture_output=True)
    assert check.returncode != 0  # no torch in there
    run = subprocess.run([str(py), "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.splitlines()[0])["detections"]
    out = tmp_path / "pred"
    shutil.rmtree(out, ignore_errors=True)
    assert main(["predict", "--weights", str(exported["pt"]), str(photo), "-o", str(out), "--conf", "0.05", "--no-draw",
                 "--tile", "off"]) == 0
    want = json.loads((out / "predictions.json").read_text())["images"][0]["detections"]
    assert len(got) == len(want) > 0
    assert [d["label"] for d in got] == [d["label"] for d in want]
