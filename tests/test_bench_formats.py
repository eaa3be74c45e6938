"""`retail-detect bench --formats`: the rows, ratios, goals and JSON of the formats table, a failing format as a
row with its reason (timings are never asserted, only their presence and the arithmetic on them)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import pytest
import torch

from data_tools.outputs import check_output
from data_tools.store import load_dataset
from detect.cli import main
from detect.config import config_from_dict
from detect.engine.runtime.checkpoint import save_checkpoint
from detect.models.build import NAMES, build_model
from detect.tools.bench_formats import run_bench_formats
from detect.tools.bench_formats_table import GOALS, add_ratios, format_table, goals

SIZE = 64
FAST = {"size": SIZE, "steps": 1, "warmup": 0, "batches": (1, 2)}
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
HAS_QUANTIZE = importlib.util.find_spec("detect.tools.quantize") is not None


def _checkpoint(path, name: str, class_names: list[str]):
    cfg = config_from_dict({"data": {"image_size": SIZE}, "model": {"name": name, "backbone_weights": "none"}})
    torch.manual_seed(0)
    model = build_model(cfg.model, len(class_names))
    return save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict(), "class_names": class_names})


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_one_head_torch_and_onnx_rows_ratios_json(tmp_path, tiny_split, capsys) -> None:
    names = list(load_dataset(tiny_split["val"]).class_names)
    weights = _checkpoint(tmp_path / "ssd.pt", "ssd", names)
    out = tmp_path / "bench.json"
    result = run_bench_formats("torch,onnx", "fp32", weights=[str(weights)], data=tiny_split["val"],
                               json_out=out, strict=True, log=lambda _line: None, **FAST)
    rows = result["rows"]
    assert [(r["role"], r["format"]) for r in rows] == [("ours", "torch"), ("ours", "onnx"), ("peer", "torch"),
                                                       ("peer", "onnx")]
    assert not any("error" in r for r in rows)
    for r in rows:
        assert set(r["ms_b1"]) == {"1", "2"} and all(_positive(v) for v in r["ms_b1"].values())
        assert _positive(r["img_s"]) and _positive(r["mb"]) and r["size"] == SIZE
    eager, onnx, peer, peer_onnx = rows
    assert eager["best_batch"] in (1, 2) and peer_onnx["best_batch"] == 1  # the peer's ONNX graph is batch 1
    assert eager["vs_eager"] == {"1": 1.0, "2": 1.0} and peer["vs_peer"] == {"1": 1.0, "2": 1.0}
    for t in ("1", "2"):
        assert onnx["vs_eager"][t] == pytest.approx(eager["ms_b1"][t] / onnx["ms_b1"][t])
        assert onnx["vs_peer"][t] == pytest.approx(onnx["ms_b1"][t] / peer["ms_b1"][t])
    # trained weights: AP measured for our rows (eager and the file agree to within rounding), not for the peers
    assert 0.0 <= eager["ap"] <= 1.0 and onnx["ap"] == pytest.approx(eager["ap"], abs=0.02)
    assert onnx["ap_delta"] == pytest.approx(100 * (onnx["ap"] - eager["ap"]))
    assert peer["ap"] is None and peer_onnx["ap"] is None
    saved = json.loads(out.read_text())
    assert saved["rows"] == json.loads(json.dumps(rows)) and saved["meta"]["bench"] == "formats"
    assert saved["meta"]["load_average"]["start"] is not None and set(saved["goals"]) == {"ssd"}
    check_output(out, "bench", [], flag="--json")  # recognised as a bench JSON: a second run may replace it
    table = capsys.readouterr().out
    assert format_table(result) in table and "torchvision SSD" in table and "eager/this @2t" in table


def test_a_failing_format_is_a_row_with_its_reason(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    result = run_bench_formats("torch,openvino", "fp32", models=["ssd"], num_classes=2, peers=False,
                               log=lambda _line: None, **FAST)
    eager, failed = result["rows"]
    assert "error" not in eager and eager["ap"] is None  # random-init head: no AP
    assert "openvino" in failed["error"] and "ms_b1" not in failed
    assert result["goals"]["ssd"]["fp32_vs_eager"]["met"] is None  # nothing exported was measured
    printed = capsys.readouterr().out
    assert f"FAILED: {failed['error']}" in printed and "not measured" in printed


def _row(head: str, fmt: str, prec: str, ms: float, role: str = "ours", ap: float | None = 0.5) -> dict:
    return {"head": head, "model": head, "role": role, "format": fmt, "precision": prec, "size": SIZE,
            "ms_b1": {"1": ms, "2": ms / 2}, "img_s": 1.0, "best_batch": 1, "ap": ap, "ap50": ap, "mb": 1.0}


def test_goals_hold_at_every_thread_count_and_int8_within_one_ap_point() -> None:
    rows = [_row("ssd", "torch", "fp32", 100.0), _row("ssd", "onnx", "fp32", 50.0),
            _row("ssd", "openvino", "int8", 30.0, ap=0.492), _row("ssd", "onnx", "int8", 20.0, ap=0.48),
            _row("ssd", "torch", "fp32", 120.0, role="peer", ap=None)]
    rows[1]["ms_b1"]["2"] = 30.0  # 100/50 = 2.0x at 1 thread, 50/30 = 1.67x at 2: the goal fails at 2 threads
    add_ratios(rows)
    g = goals(rows)["ssd"]
    assert g["fp32_vs_eager"]["met"] is False and g["fp32_vs_eager"]["value"] == pytest.approx(50 / 30)
    # onnx int8 is faster but loses 2 AP points; openvino int8 loses 0.8: 100/30 = 3.3x counts
    assert g["int8_vs_eager"] == {"met": True, "value": pytest.approx(100 / 30), "row": "openvino int8",
                                  "ap_delta": pytest.approx(-0.8)}
    assert g["vs_peer_eager"]["met"] is True and g["vs_peer_eager"]["value"] == pytest.approx(20 / 120)
    rows[2]["ap"] = 0.45  # now every INT8 row loses more than a point
    add_ratios(rows)
    assert goals(rows)["ssd"]["int8_vs_eager"]["met"] is False
    assert GOALS["int8_ap_loss_points"] == 1.0


def test_int8_needs_calibration_photos_other_than_the_evaluation_set(tiny_split) -> None:
    from data_tools.errors import InvalidInput

    with pytest.raises(InvalidInput, match="--calib"):
        run_bench_formats("onnx", "fp32,int8", models=["ssd"], **FAST)
    with pytest.raises(InvalidInput, match="is --data"):
        run_bench_formats("onnx", "int8", models=["ssd"], data=tiny_split["val"], calib=str(tiny_split["val"]),
                          **FAST)
    with pytest.raises(InvalidInput, match="--formats"):
        run_bench_formats("torch,tensorrt", "fp32", models=["ssd"], **FAST)


@pytest.mark.skipif(not HAS_QUANTIZE, reason="static INT8 (detect.tools.quantize) has not landed")
def test_int8_rows_are_calibrated_and_measured(tmp_path, tiny_split) -> None:
    names = list(load_dataset(tiny_split["val"]).class_names)
    weights = _checkpoint(tmp_path / "yolo.pt", "yolo", names)
    result = run_bench_formats("torch,onnx", "fp32,int8", weights=[str(weights)], data=tiny_split["val"],
                               calib=str(tiny_split["train"]), calib_images=4, peers=False, strict=True,
                               log=lambda _line: None, **FAST)
    int8 = [r for r in result["rows"] if r["precision"] == "int8"]
    assert len(int8) == 1 and "error" not in int8[0] and int8[0]["ap_delta"] is not None
    assert set(int8[0]["vs_eager"]) == {"1", "2"}


def test_cli_formats_models_and_json(tmp_path, capsys) -> None:
    out = tmp_path / "b.json"
    assert main(["bench", "--formats", "torch", "--models", "yolo", "--size", str(SIZE), "--steps", "1",
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["format"]) for r in rows] == [("ours: yolo", "torch"), ("torchvision FCOS", "torch")]
    assert "ours: yolo" in capsys.readouterr().out
    assert main(["bench", "--weights", "a.pt", "--models", "yolo"]) == 1
    assert "not both" in capsys.readouterr().err


@pytest.mark.slow
def test_every_head_in_every_format(tmp_path) -> None:
    formats = "torch,onnx" + (",openvino" if HAS_OPENVINO else "")
    result = run_bench_formats(formats, "fp32", models=list(NAMES), num_classes=3, json_out=tmp_path / "b.json",
                               log=lambda _line: None, **FAST)
    n_formats = len(formats.split(","))
    assert len(result["rows"]) == len(NAMES) * (n_formats + 2)
    for name in NAMES:  # a head without a one-graph export yet (its dense()) has rows saying so, nothing else fails
        cfg = config_from_dict({"model": {"name": name, "backbone_weights": "none"}})
        exportable = getattr(build_model(cfg.model, 3), "exportable", False)
        rows = [r for r in result["rows"] if r["head"] == name]
        failed = [r for r in rows if "error" in r]
        assert [(r["role"], r["format"]) for r in failed] == ([] if exportable else [
            ("ours", f) for f in formats.split(",") if f != "torch"]), failed
        assert (result["goals"][name]["fp32_vs_eager"]["value"] is not None) == exportable
