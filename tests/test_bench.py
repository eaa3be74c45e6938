"""`retail-detect bench` on the CPU: tiny sizes, structure and sanity of the numbers (timings are never asserted)."""

from __future__ import annotations

import importlib
import json
import math

import pytest
import torch

from detect.models.build import ModelConfig
from detect.models.torchvision_peers import PEER_BUILDERS, PEER_HEADS, build_peer
from detect.tools.bench import FAMILIES, format_table, run_bench
from detect.tools.timing import synthetic_batch

SIZE, K = 64, 3


def _backbone():
    from detect.models.backbones import build_backbone

    return build_backbone("efficientnet_lite0", weights="none")


def test_synthetic_batch_is_valid() -> None:
    images, targets = synthetic_batch(4, SIZE, K, torch.device("cpu"), seed=1)
    assert images.shape == (4, 3, SIZE, SIZE) and images.dtype == torch.uint8
    for t in targets:
        boxes, labels = t["boxes"], t["labels"]
        assert 3 <= len(boxes) <= 15 and boxes.dtype == torch.float32
        assert (boxes[:, 2:] > boxes[:, :2]).all() and boxes.min() >= 0 and boxes.max() <= SIZE
        assert labels.dtype == torch.int64 and labels.min() >= 1 and labels.max() <= K


@pytest.mark.parametrize("name", sorted(PEER_BUILDERS))
def test_peer_on_our_backbone_trains_and_predicts(name: str) -> None:
    torch.manual_seed(0)
    body = _backbone()
    cfg = ModelConfig()
    model = build_peer(name, cfg, getattr(cfg, PEER_HEADS[name]), K, SIZE, backbone=body)
    assert model.backbone is body
    images, targets = synthetic_batch(2, SIZE, K, torch.device("cpu"))
    # The peer's transform sees the same pixels as our detectors (backbone.normalize).
    ref = body.normalize(images[:1].float())[0]
    seen = model.net.transform.normalize(images[0].float() / 255.0)
    assert torch.allclose(seen, ref, atol=1e-4)

    model.train()
    losses = model(images, targets)
    loss = sum(losses.values())
    assert losses and math.isfinite(float(loss.detach()))
    loss.backward()
    model.eval()
    with torch.inference_mode():
        dets = model(images)
    assert len(dets) == 2
    for d in dets:
        assert d["boxes"].shape[1:] == (4,) and len(d["boxes"]) == len(d["scores"]) == len(d["labels"])
        if len(d["labels"]):
            assert d["labels"].min() >= 1 and d["labels"].max() <= K


def _real_data_ready() -> bool:
    try:
        importlib.import_module("data_tools.synth")
        data = importlib.import_module("detect.data")
    except ImportError:
        return False
    return hasattr(data, "DetectionDataset") and hasattr(data, "build_loader")


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_run_bench_one_family_json_and_table(tmp_path, capsys) -> None:
    """The default lane's bench: one family on synthetic batches (every family and the real-data pipeline: slow)."""
    out = tmp_path / "result.json"
    result = run_bench(models=["ssd"], size=SIZE, batch=2, device="cpu", steps=1, warmup=1, latency_iters=1,
                       num_classes=K, backbone_weights="none", json_out=out, real_data=False, strict=True)
    saved = json.loads(out.read_text())
    assert list(saved["families"]) == ["ssd"] and not saved["errors"] and saved["meta"]["device"] == "cpu"
    r = saved["families"]["ssd"]
    assert r["peers"] and set(r["ratios"]) == set(r["peers"]) and "real_vs_synthetic" not in r
    for m in [r["ours"], *r["peers"].values()]:
        assert all(_positive(m[key]) for key in ("params_m", "train_img_s", "latency_ms_b1", "latency_ms_batch"))
    assert format_table(result) in capsys.readouterr().out


@pytest.mark.slow
def test_run_bench_cpu_json(tmp_path, capsys) -> None:
    families = list(FAMILIES)
    out = tmp_path / "bench" / "result.json"
    real = _real_data_ready()
    result = run_bench(models=list(FAMILIES), size=SIZE, batch=2, device="cpu", steps=1, warmup=1,
                       latency_iters=1, num_classes=K, backbone_weights="none", json_out=out, real_data=real,
                       strict=True)
    saved = json.loads(out.read_text())
    assert saved["meta"]["device"] == "cpu" and saved["meta"]["torch"] == torch.__version__
    assert saved["meta"]["settings"]["size"] == SIZE and saved["meta"]["settings"]["batch"] == 2
    assert set(saved["families"]) == set(families) and not saved["errors"]
    assert not saved["skipped"]
    for fam in families:
        r = saved["families"][fam]
        assert r["peers"] and set(r["ratios"]) == set(r["peers"])
        for m in [r["ours"], *r["peers"].values()]:
            for key in ("params_m", "train_img_s", "latency_ms_b1", "latency_ms_batch"):
                assert _positive(m[key]), (fam, m["model"], key, m[key])
            assert m["train_peak_mib"] is None and m["infer_peak_mib"] is None  # CPU
            assert m["dets_per_image"] >= 0 and math.isfinite(m["loss_last"])
        for q in r["ratios"].values():
            assert all(_positive(q[k]) for k in ("train", "latency_b1", "latency_batch"))
        if real:
            assert _positive(r["ours"]["real_img_s"]) and _positive(r["real_vs_synthetic"])
    printed = capsys.readouterr().out
    assert "train ours/peer" in printed and all(f in printed for f in families)
    assert format_table(result) in printed
