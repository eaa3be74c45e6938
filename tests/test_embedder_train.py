"""The embedder's training: its loss, its crop data, the fit loop, its checkpoints and the CLI verb."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_tools.errors import InvalidInput
from data_tools.store import save_dataset
from data_tools.synth import make_tiny_dataset
from detect.cli import main
from detect.config import ConfigError
from detect.config.embedder import CropAugmentConfig, load_embedder_config
from detect.data.crop_augment import ClassBalancedBatches, CropAugmenter
from detect.data.crops import is_class_folders, load_crops, read_class_list
from detect.engine.inference.crop_embedder import CropEmbedder
from detect.engine.runtime.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint
from detect.models.embedder_loss import build_loss

TINY = ["model.image_size=32", "model.dim=16", "train.classes_per_batch=3", "train.per_class=2",
        "data.max_crop_side=48", "train.log_every=100"]


@pytest.fixture(scope="module")
def shelves(tmp_path_factory) -> Path:
    """6 synthetic 128x128 shelf photos of 3 brands as a dataset file (each box a crop)."""
    root = tmp_path_factory.mktemp("emb_shelves")
    rs = make_tiny_dataset(root, images=6, classes=3, seed=1, size=(128, 128))
    save_dataset(rs, root / "shelves.pkl")
    return root / "shelves.pkl"


def _photo(path: Path, colour: tuple[int, int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = np.clip(np.array(colour, np.float32) + rng.normal(0, 20, (40, 30, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, quality=90)


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory) -> Path:
    """``root/<coarse>/<product>/*.jpg``: 3 products of 4 photos, two of them under the same coarse folder."""
    root = tmp_path_factory.mktemp("emb_folders") / "train"
    products = {"Juice/Apple": (200, 40, 40), "Juice/Orange": (230, 140, 20), "Milk/Standard": (40, 60, 200)}
    for n, (where, colour) in enumerate(products.items()):
        for i in range(4):
            _photo(root / where / f"{i}.jpg", colour, 10 * n + i)
    return root


@pytest.mark.parametrize("kind", ["proxy_anchor", "arcface"])
def test_loss_decreases_and_proxies_move(kind):
    torch.manual_seed(0)
    emb = torch.nn.Parameter(torch.randn(24, 16))
    labels = torch.arange(4).repeat_interleave(6)
    loss = build_loss(kind, 4, 16)
    start = loss.proxies.detach().clone()
    opt = torch.optim.Adam([emb, *loss.parameters()], lr=0.05)
    values = []
    for _ in range(30):
        value = loss(torch.nn.functional.normalize(emb, dim=1), labels)
        opt.zero_grad()
        value.backward()
        opt.step()
        values.append(value.item())
    assert values[-1] < 0.5 * values[0]
    assert not torch.allclose(loss.proxies.detach(), start)


def test_arcface_margin_makes_it_harder():
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    labels = torch.arange(4).repeat(2)
    with_margin = build_loss("arcface", 4, 16)
    no_margin = build_loss("arcface", 4, 16, margin=0.0)
    no_margin.load_state_dict(with_margin.state_dict())
    assert with_margin(emb, labels) > no_margin(emb, labels)


def test_class_folders_are_read_by_innermost_folder(class_folders, tmp_path):
    assert is_class_folders(class_folders)
    cs = load_crops(class_folders, log=lambda _: None)
    assert cs.kind == "class_folders" and cs.class_names == ["Apple", "Orange", "Standard"]
    assert cs.per_class().tolist() == [4, 4, 4]
    assert np.allclose(cs.boxes[0], [0, 0, 30, 40])  # the whole photo is the product
    labelled = tmp_path / "labelled"
    _photo(labelled / "a" / "0.jpg", (1, 2, 3), 0)
    (labelled / "a" / "0.xml").write_text("<annotation/>")
    assert not is_class_folders(labelled)


def test_classes_keep_some_in_the_order_asked(class_folders, tmp_path):
    listing = tmp_path / "keep.txt"
    listing.write_text("# held out: Apple\nStandard\nOrange\n")
    assert read_class_list([str(listing)]) == ["Standard", "Orange"]
    assert read_class_list(["Apple, Orange"]) == ["Apple", "Orange"]
    cs = load_crops(class_folders, read_class_list([str(listing)]), log=lambda _: None)
    assert cs.class_names == ["Standard", "Orange"] and sorted(set(cs.labels.tolist())) == [0, 1]
    with pytest.raises(InvalidInput, match="no class 'Orang'; did you mean 'Orange'") as err:
        load_crops(class_folders, ["Orang"], log=lambda _: None)
    assert "\n" not in str(err.value)


def test_boxes_become_crops_with_context(shelves):
    cs = load_crops(shelves, log=lambda _: None)
    assert cs.kind == "boxes" and len(cs) > 10 and len(cs.class_names) == 3
    img, box = cs.images[0], cs.boxes[0]
    assert box[0] >= 0 and box[2] <= img.shape[1] and box[3] <= img.shape[0]


def test_batches_are_classes_times_crops_and_repeat_per_epoch():
    labels = np.repeat(np.arange(5), [3, 7, 2, 5, 4])
    batches = ClassBalancedBatches(labels, 3, 2, seed=0)
    first = list(batches)
    assert len(first) == len(batches) == 4
    for b in first:
        counts = np.bincount(labels[b], minlength=5)
        assert sorted(counts[counts > 0].tolist()) == [2, 2, 2]
    assert list(batches) == first
    batches.set_epoch(1)
    assert list(batches) != first


def test_augmenter_is_deterministic_per_seed(shelves):
    cs = load_crops(shelves, log=lambda _: None)
    aug = CropAugmenter(CropAugmentConfig(neighbour=1.0, occlusion=1.0), 48, seed=3)
    a = [aug(cs, i) for i in range(4)]
    aug.set_seed(3)
    b = [aug(cs, i) for i in range(4)]
    assert all(x.shape == (48, 48, 3) and x.dtype == np.uint8 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_two_epochs_write_checkpoints_crop_embedder_loads_then_resume(shelves, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["embedder", "train", str(shelves), "-o", "runs/e", "train.epochs=2", *TINY]) == 0
    out = capsys.readouterr().out
    assert "epoch 2/2" in out and "imagenet baseline" in out and "checkpoint runs/e/best.pt" in out
    assert "val top-1 (and so best.pt) will say little" in out  # a handful of val crops: the run says so
    run = tmp_path / "runs" / "e"
    assert {"last.pt", "best.pt", "metrics.csv", "summary.json", "config.yaml"} <= {p.name for p in run.iterdir()}
    emb = CropEmbedder.load(run / "best.pt", device="cpu")
    assert emb.settings.kind == "trained" and emb.settings.dim == 16
    assert emb.class_names == load_crops(shelves, log=lambda _: None).class_names
    assert emb.identity()["sha256"] != CropEmbedder.load("imagenet", device="cpu", image_size=32).identity()["sha256"]
    vectors = emb.embed([np.zeros((20, 10, 3), np.uint8), np.full((8, 30, 3), 200, np.uint8)])
    assert vectors.shape == (2, 16) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    steps = load_checkpoint(run / "last.pt")["step"]
    assert main(["embedder", "train", "--resume", str(run / "last.pt"), "train.epochs=3"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "epoch 3/3" in out
    ck = load_checkpoint(run / "last.pt")
    assert ck["epoch"] == 3 and ck["step"] > steps and "loss" in ck and "proxies" in ck["loss"]


def test_budget_stop_inside_an_epoch_resumes_there(shelves, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["embedder", "train", str(shelves), "-o", "r", "train.epochs=1", "train.max_steps=2", *TINY]) == 0
    ck = load_checkpoint(tmp_path / "r" / "last.pt")
    assert ck["step"] == 2 and ck["epoch"] == 0 and ck["batch"] == 2
    assert main(["embedder", "train", "--resume", "r/last.pt", "train.max_steps=0"]) == 0
    ck = load_checkpoint(tmp_path / "r" / "last.pt")
    assert ck["epoch"] == 1 and ck["batch"] == 0 and ck["step"] > 2
    assert "resumed from r/last.pt at epoch 0 batch 2" in capsys.readouterr().out


def test_detector_checkpoint_is_refused_in_one_line(tmp_path):
    path = tmp_path / "detector.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": {}, "config": {"model": {"name": "ssd"}},
                "class_names": ["a"]}, path)
    with pytest.raises(CheckpointError, match="not an embedder checkpoint .a detector checkpoint.") as err:
        CropEmbedder.load(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.lr=-1"], "train.lr: must be"),
    (["train.lrr=0.1"], "unknown key 'train.lrr'; did you mean 'lr'"),
    (["loss.name=triplet"], "loss.name: 'triplet' is not one of proxy_anchor, arcface"),
    (["augment.jitter=0.9"], "augment.jitter"),
])
def test_config_errors_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_embedder_config(None, overrides)
    assert "\n" not in str(err.value)


def test_cli_errors_are_one_line(shelves, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["embedder", "train", str(shelves), "train.batch=3"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key 'train.batch'" in err[0]
    assert main(["embedder", "train", str(shelves), "--classes", "brand_zz", *TINY]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no class 'brand_zz'" in err[0]
    assert main(["embedder", "train"]) == 1
    assert "needs DATA" in capsys.readouterr().err


@pytest.mark.slow
def test_training_beats_the_imagenet_baseline_on_look_alike_brands(tmp_path, monkeypatch, capsys):
    """Dense synthetic shelves of 12 look-alike brands: the trained embedder names val crops better than ImageNet."""
    from data_tools.synth_dense import make_dense_dataset

    monkeypatch.chdir(tmp_path)
    save_dataset(make_dense_dataset(tmp_path / "d", images=16, classes=12, seed=0), tmp_path / "d.pkl")
    from detect.config.embedder import embedder_config_from_dict
    from detect.engine.training.embedder_fit import fit_embedder

    cfg = embedder_config_from_dict({}, ["data.train=d.pkl", "model.image_size=64", "train.epochs=4",
                                         "train.out_dir=runs/e"])
    result = fit_embedder(cfg, log=lambda _: None)
    assert result["best_top1"] >= result["baseline_top1"] + 0.1 or result["best_top1"] >= 0.97
