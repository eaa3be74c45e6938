"""External proposals belong to the data: the file is read against the records, the proposals ride through
augmentation with the image, and the batch hands them to the model (``target["proposals"]``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data_tools.records import Record, RecordSet
from data_tools.synth import make_tiny_dataset
from detect.config import AugmentConfig
from detect.data.dataset import DetectionDataset
from detect.data.loader import collate
from detect.data.proposals import (
    ProposalsError,
    ProposalsForFiles,
    check_proposals_arg,
    letterboxed_inputs,
    model_inputs,
    proposals_for_records,
)


def _records() -> list[Record]:
    return [Record(image="shelf/a.jpg", width=200, height=100), Record(image="b.jpg", width=100, height=400),
            Record(image="other/a.jpg", width=50, height=50)]


def test_keys_name_records_by_path_suffix_or_unique_file_name(tmp_path: Path) -> None:
    path = tmp_path / "props.json"
    path.write_text(json.dumps({"shelf/a.jpg": [[10, 20, 110, 90], [-5, 0, 250, 100]], "./b.jpg": [],
                                "/data/run/other/a.jpg": [[1, 1, 9, 9]], "missing.jpg": [[0, 0, 1, 1]]}))
    props = proposals_for_records(path, _records())
    assert len(props) == 3 and all(p.dtype == np.float32 for p in props)
    np.testing.assert_allclose(props[0], [[10, 20, 110, 90], [0, 0, 200, 100]])  # original pixels, clipped
    assert props[1].shape == (0, 4)
    np.testing.assert_allclose(props[2], [[1, 1, 9, 9]])  # the key ends with the record's path


def test_predict_output_is_a_proposals_file(tmp_path: Path) -> None:
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps({"format": "retail-detect-predictions", "images": [
        {"path": "shots/b.jpg", "detections": [{"box": [5, 5, 50, 60], "score": 0.9, "label": 1}]}]}))
    np.testing.assert_allclose(proposals_for_records(path, _records())[1], [[5, 5, 50, 60]])
    path.write_text(json.dumps({"format": "retail-detect-predictions", "images": [{"path": "b.jpg"}]}))
    with pytest.raises(ProposalsError, match=r"images\[0\]: 'detections' must be a list"):
        proposals_for_records(path, _records())


@pytest.mark.parametrize("content, match", [
    ("not json", r"props.json:1: invalid JSON"),
    ("[1, 2]", "top level must be an object"),
    ('{"b.jpg": {"x": 1}}', "key 'b.jpg': expected a list"),
    ('{"b.jpg": [[0, 0, 10]]}', "key 'b.jpg': box 0: expected 4 numbers"),
    ('{"b.jpg": [[0, 0, 10, 10], [5, 5, 2, 9]]}', "key 'b.jpg': box 1: needs x2 > x1"),
    ('{"b.jpg": [[0, 0, 10, NaN]]}', "non-finite"),
    ('{"b.jpg": [[500, 500, 600, 600]]}', "outside the 100x400 image"),
    ('{"a.jpg": [[0, 0, 10, 10]]}', "file name matches 2 images"),
    ('{"b.jpg": [], "./b.jpg": []}', "name the same image"),
    ('{"zzz.jpg": []}', "none of its 1 keys"),
])
def test_errors_name_file_and_key(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "props.json"
    path.write_text(content)
    with pytest.raises(ProposalsError, match=match) as err:
        proposals_for_records(path, _records())
    assert str(path) in str(err.value)


def test_strict_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "props.json"
    path.write_text('{"b.jpg": [], "zzz.jpg": []}')
    assert proposals_for_records(path, _records())[1].shape == (0, 4)
    with pytest.raises(ProposalsError, match="'zzz.jpg': no such image"):
        proposals_for_records(path, _records(), strict=True)
    with pytest.raises(ProposalsError, match="nope.json.*does not exist"):
        proposals_for_records(tmp_path / "nope.json", _records())
    with pytest.raises(ProposalsError, match="not a regular file"):
        proposals_for_records(tmp_path, _records())
    bad = tmp_path / "bad.json"
    bad.write_text('{"b.jpg": [],\n  "a.jpg": [[0, 0, 1, 1]')
    with pytest.raises(ProposalsError, match=r"bad.json:2: invalid JSON"):
        proposals_for_records(bad, _records())


def test_proposals_move_with_the_image_through_a_flip(tmp_path: Path) -> None:
    rs = make_tiny_dataset(tmp_path, images=2, classes=2, seed=3, size=64)
    rec = rs.records[0]
    props = [np.array([[2.0, 4.0, 20.0, 30.0]], np.float32), np.zeros((0, 4), np.float32)]
    plain = DetectionDataset(rs, 64, None, train=False, proposals=props)
    _, t = plain[0]
    scale = 64 / max(rec.width, rec.height)
    np.testing.assert_allclose(t["proposals"].numpy(), props[0] * scale, atol=1e-4)
    assert len(t["boxes"]) == len(rec.boxes) and (t["labels"] >= 1).all()  # proposals are not objects

    flip = AugmentConfig(hflip=1.0, min_visibility=0.0)
    flipped = DetectionDataset(rs, 64, flip, train=True, proposals=props, seed=0)
    _, f = flipped[0]
    w = rec.width * scale  # the flip happens before letterbox padding: mirrored within the image's own width
    x1, y1, x2, y2 = (props[0][0] * scale).tolist()
    np.testing.assert_allclose(f["proposals"].numpy(), [[w - x2, y1, w - x1, y2]], atol=0.05)
    assert torch.equal(f["labels"].sort().values, t["labels"].sort().values)


def test_batch_hands_proposals_to_the_model_and_subsets_keep_them(tmp_path: Path) -> None:
    rs = make_tiny_dataset(tmp_path, images=3, classes=2, seed=4, size=64)
    props = [np.array([[1.0, 1.0, 9.0, 9.0]] * (i + 1), np.float32) for i in range(3)]
    ds = DetectionDataset(rs, 64, None, train=False, proposals=props)
    _, targets = collate([ds[0], ds[2]])
    extra = model_inputs(targets, "cpu")
    assert [p.shape[0] for p in extra["proposals"]] == [1, 3]
    assert model_inputs(collate([DetectionDataset(rs, 64, None, train=False)[0]])[1], "cpu") == {}
    sub = ds.subset([2])
    assert len(sub) == 1 and sub[0][1]["proposals"].shape == (3, 4)
    with pytest.raises(ValueError, match="proposals for 2 records"):
        DetectionDataset(RecordSet(rs.class_names, rs.image_root, rs.records, {}), 64, None, False, proposals=props[:2])


def test_predict_path_letterboxes_the_extras_each_photo_carries(tmp_path: Path) -> None:
    """The predict path's model_inputs: per photo boxes in original px -> tensor px, by its own scale."""
    extras = [{"proposals": np.array([[10, 20, 110, 90]], np.float32)},
              {"proposals": np.zeros((0, 4), np.float32)}]
    inputs = letterboxed_inputs(extras, [0.5, 2.0], "cpu")
    assert inputs["proposals"][0].tolist() == [[5, 10, 55, 45]] and inputs["proposals"][1].shape == (0, 4)
    assert letterboxed_inputs([{}, {}], [0.5, 2.0], "cpu") == {}
    with pytest.raises(ValueError, match="same extra inputs"):  # one batch cannot mix photos with and without
        letterboxed_inputs([extras[0], {}], [0.5, 2.0], "cpu")


def test_file_entries_are_found_by_name_and_checked_against_the_image(tmp_path: Path) -> None:
    path = tmp_path / "props.json"
    path.write_text(json.dumps({"shelf/a.jpg": [[10, 20, 300, 90]], "b.jpg": [[500, 0, 600, 10]]}))
    table = ProposalsForFiles(path)
    entry = table.entry_for("/photos/shelf/a.jpg", "shelf/a.jpg")
    assert entry.where == f"{path}: key 'shelf/a.jpg'"
    assert entry.boxes(200, 100).tolist() == [[10, 20, 200, 90]]  # clipped once the image size is known
    with pytest.raises(ProposalsError, match="lies outside the 100x100 image"):
        table.entry_for("x/b.jpg", "b.jpg").boxes(100, 100)
    with pytest.raises(ProposalsError, match="no proposals for c.jpg"):
        table.entry_for("c.jpg", "c.jpg")


def test_proposals_refused_for_a_model_that_cannot_take_them_and_required_without_an_rpn() -> None:
    no_rpn = torch.nn.Module()
    no_rpn.needs_proposals = True
    with pytest.raises(ValueError, match="for Fast R-CNN checkpoints"):
        check_proposals_arg(torch.nn.Module(), "ssd", "w.pt", "props.json")
    with pytest.raises(ValueError, match="trained on external proposals"):
        check_proposals_arg(no_rpn, "fast_rcnn", "w.pt", None)
    check_proposals_arg(no_rpn, "fast_rcnn", "w.pt", "props.json")
    check_proposals_arg(torch.nn.Module(), "ssd", "w.pt", None)
