"""The one output policy (:mod:`data_tools.outputs`): never an input, never a user's file, folders of inputs refused."""

from __future__ import annotations

import json

import pytest
import torch

from data_tools.errors import UserError
from data_tools.outputs import KINDS, OutputRefused, check_output, check_output_folder, refuse_overwrite


def test_check_output_folder_refuses_input_folders(tmp_path):
    inp = tmp_path / "shelves"
    (inp / "sub").mkdir(parents=True)
    img = inp / "sub" / "a.jpg"
    img.write_bytes(b"x")
    with pytest.raises(OutputRefused, match="inside the input folder"):
        check_output_folder(inp, [img], [inp])  # --out == input folder
    with pytest.raises(OutputRefused, match="inside the input folder"):
        check_output_folder(inp / "pred", [img], [inp])  # inside a folder source
    with pytest.raises(OutputRefused, match="folder of input"):
        check_output_folder(inp / "sub", [img])  # the folder of an input file
    with pytest.raises(OutputRefused, match="is inside -o"):
        check_output_folder(tmp_path, [img], flag="-o")  # an input inside the output folder
    assert check_output_folder(tmp_path / "out", [img], [inp]) == (tmp_path / "out").resolve()


def test_refusals_are_user_errors_and_value_errors(tmp_path):
    f = tmp_path / "a.pkl"
    f.write_bytes(b"x")
    with pytest.raises(OutputRefused) as e:
        refuse_overwrite(tmp_path / "." / "a.pkl", [None, f], "--json")
    assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)
    assert str(e.value).startswith(f"refusing to write --json {tmp_path / '.' / 'a.pkl'}: it is one of the input files")


def test_metrics_results_and_plot_replace_only_their_own_kind(tmp_path):
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"AP": 0.5, "AP50": 0.7}, indent=1))
    assert check_output(metrics, "metrics") == metrics
    results = tmp_path / "r.json"
    for text in ("[]", json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1]}])):
        results.write_text(text)
        check_output(results, "results")
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    for kind in ("metrics", "results", "stats", "export-meta"):
        with pytest.raises(OutputRefused, match=f"--json {notes}: it is a JSON file, not {KINDS[kind][1]}"):
            check_output(notes, kind, flag="--json")
    with pytest.raises(OutputRefused, match="it is a JSON file"):
        check_output(metrics, "results")
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"meta": {"device": "cpu", "torch": "2.9", "torchvision": "0.24"}, "families": {}},
                                indent=2))
    check_output(bench, "bench")
    with pytest.raises(OutputRefused, match="not a bench JSON"):
        check_output(metrics, "bench")


def test_exports_replace_only_exports(tmp_path):
    ts = tmp_path / "m.torchscript.pt"
    torch.jit.trace(torch.nn.Linear(2, 2), torch.rand(1, 2)).save(str(ts))
    ckpt = tmp_path / "best.pt"
    torch.save({"model": torch.zeros(2)}, ckpt)
    check_output(ts, "torchscript")
    with pytest.raises(OutputRefused, match="a zip archive .*not a TorchScript model"):
        check_output(ckpt, "torchscript", flag="--out")
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"\x08\t\x12\x07pytorch\x1a\x062.14.1:")  # the head of torch.onnx.export's file
    check_output(onnx, "onnx")
    with pytest.raises(OutputRefused, match="not an ONNX model"):
        check_output(ckpt, "onnx")
    meta = tmp_path / "m.onnx.json"
    meta.write_text(json.dumps({"format": "onnx", "model": "ssd"}, indent=1))
    check_output(meta, "export-meta")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    check_output(empty, "onnx")  # nothing to lose
    with pytest.raises(OutputRefused, match="is a folder"):
        check_output(tmp_path, "onnx")
