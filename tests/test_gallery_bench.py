"""``retail-detect gallery-bench``: the leave-classes-out protocol on a tiny synthetic dataset (imagenet at a small
input side), its JSON, the refusal of an embedder trained on a new class, and a random embedder at chance."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data_tools.errors import InvalidInput
from data_tools.store import save_dataset
from data_tools.synth import make_tiny_dataset
from detect.cli import main
from detect.models.embedder import EmbedderSettings, build_embedder
from detect.tools.gallery_bench import run_gallery_bench
from detect.tools.gallery_bench_data import Crops, split_photos


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """8 classes on 24 photos (320x240), as a dataset file."""
    root = tmp_path_factory.mktemp("tiny")
    rs = make_tiny_dataset(root, images=24, classes=8, seed=3, size=(320, 240))
    save_dataset(rs, root / "d.pkl")
    return root / "d.pkl", list(rs.class_names)


class RandomEmbedder:
    """Random unit vectors whatever the crop: a benchmark that measures something scores it near chance."""

    name, class_names, batch_size = "random", [], 64
    settings = EmbedderSettings(kind="imagenet", dim=64, image_size=32)

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def identity(self) -> dict:
        return {"name": "random", "sha256": "0" * 64, "kind": "random", "dim": 64, "image_size": 32}

    def embed(self, crops):
        v = self.rng.standard_normal((len(crops), 64)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_cli_runs_and_writes_json_with_every_field(tiny, tmp_path, capsys):
    data, _ = tiny
    out = tmp_path / "res" / "bench.json"
    argv = ["gallery-bench", str(data), "--embedder", "imagenet", "--size", "64", "--shots", "1,3",
            "--unknown-fraction", "0.25", "--search-sizes", "100", "--json", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "leave-classes-out" in text and "open set" in text and "ms per crop" in text
    res = json.loads(out.read_text())
    meta = res["meta"]
    assert meta["benchmark"] == "gallery-bench" and meta["machine"]["load_start"] is not None
    assert len(meta["new_classes"]) == 4 and len(meta["unknown_classes"]) == 2 and len(meta["old_classes"]) == 2
    (run,) = res["runs"]
    assert run["embedder"] == "imagenet" and run["embed"]["image_size"] == 64 and run["embed"]["ms_per_crop"] > 0
    assert [s["k"] for s in run["shots"]] == [1, 3]
    for s in run["shots"]:
        assert s["gallery_skus"] == 6 and s["new_refs"] <= 4 * s["k"] and s["enrol_seconds"] > 0
        assert 0 <= s["new_top1"] <= 1 and s["unchanged"]["refs_identical"] and s["unchanged"]["ok"]
        assert s["old_top1_before"] == run["old"]["top1"]
        # old queries may only lose to a new SKU; none changes between old SKUs
        assert s["unchanged"]["answers_changed"] == s["unchanged"]["answers_changed_to_new"]
        assert {"precision", "recall", "threshold"} <= set(s["open_set"])
    assert {"precision", "recall", "known_named_right"} <= set(run["open_set_before"])
    assert res["search"][0]["refs"] == 100 and res["search"][0]["ms_per_query"] > 0
    # the output policy: an earlier result is replaced, a user's file is not
    assert main(argv) == 0
    capsys.readouterr()
    mine = tmp_path / "notes.json"
    mine.write_text('{"mine": 1}')
    assert main([*argv[:-1], str(mine)]) == 1 and "refusing to overwrite" in capsys.readouterr().err
    assert mine.read_text() == '{"mine": 1}'


def test_enrolment_changes_nothing_already_enrolled(tiny, tmp_path):
    """The old rows stay bit-identical, so searched among the old SKUs every old query gets the same answer as
    before (old top-1 before == after); among all SKUs an old query can only lose to a new one."""
    data, _ = tiny
    res = run_gallery_bench(str(data), ["imagenet"], image_size=64, shots=[2], search_sizes=[], log=lambda s: None)
    s = res["runs"][0]["shots"][0]
    assert s["unchanged"]["ok"] and s["unchanged"]["refs_identical"] and s["unchanged"]["answers_among_old_identical"]
    lost = s["unchanged"]["answers_changed_to_new"] / max(1, res["runs"][0]["old"]["queries"])
    assert s["old_top1_after"] <= s["old_top1_before"] <= s["old_top1_after"] + lost + 1e-9


def test_old_shots_same_gives_every_sku_as_many_references(tiny, capsys):
    data, _ = tiny
    assert main(["gallery-bench", str(data), "--size", "64", "--shots", "1,2", "--old-shots", "same",
                 "--search-sizes", "", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["meta"]["old_shots"] == "same"
    for s in res["runs"][0]["shots"]:
        assert s["old_refs"] == s["k"] * len(res["meta"]["old_classes"]) and s["unchanged"]["ok"]


def test_random_embedder_scores_near_chance(tmp_path):
    rs = make_tiny_dataset(tmp_path, images=40, classes=20, seed=1, size=(320, 240))
    save_dataset(rs, tmp_path / "d.pkl")
    res = run_gallery_bench(str(tmp_path / "d.pkl"), [RandomEmbedder()], shots=[5], search_sizes=[],
                            log=lambda s: None)
    s = res["runs"][0]["shots"][0]
    assert s["gallery_skus"] == 20 and s["new_queries"] >= 50
    assert s["new_top1"] < 0.2  # chance 0.05; an embedder that sees the products scores far above
    imagenet = run_gallery_bench(str(tmp_path / "d.pkl"), ["imagenet"], image_size=64, shots=[5], search_sizes=[],
                                 log=lambda s: None)["runs"][0]["shots"][0]
    assert imagenet["new_top1"] > s["new_top1"] + 0.2


def test_an_embedder_trained_on_a_new_class_is_refused(tiny, tmp_path, capsys):
    data, names = tiny
    settings = EmbedderSettings(kind="trained", dim=32, image_size=64)
    ckpt = tmp_path / "emb.pt"
    torch.save({"kind": "embedder", "embedder": settings.to_dict(), "model": build_embedder(settings, False).state_dict(),
                "class_names": names[:3]}, ckpt)
    argv = ["gallery-bench", str(data), "--embedder", f"imagenet,{ckpt}", "--new-classes", f"{names[0]},{names[5]}",
            "--search-sizes", ""]
    assert main(argv) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and "emb.pt: trained on 1 of the new/unknown classes" in err[0] and names[0] in err[0]
    # trained on the old classes only: accepted
    res = run_gallery_bench(str(data), [str(ckpt)], new_classes=",".join(names[3:]), shots=[1], search_sizes=[],
                            log=lambda s: None)
    assert res["runs"][0]["trained_on"] == 3 and len(res["meta"]["new_classes"]) == 5


def test_references_and_queries_never_share_a_photo():
    names = np.array(["a"] * 6 + ["b"] * 6, dtype=object)
    photos = [f"p{i // 2}" for i in range(12)]  # two crops a photo
    refs, qs = split_photos(Crops([np.zeros((4, 4, 3), np.uint8)] * 12, names, photos), 0.34, 0)
    assert not set(refs.photos) & set(qs.photos) and set(qs.names) == {"a", "b"} and len(refs) + len(qs) == 12
    with pytest.raises(InvalidInput, match="--query-fraction"):
        split_photos(refs, 1.5, 0)
