"""Label folders and files where a dataset .pkl is expected: converted once, cached by the inputs' content outside
the label folder, the summary printed; plus the CLI verbs around formats (export, split, --classes-from,
--image-root)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from dt_helpers import add_pair, make_image, tree_hashes, voc_xml

import data_tools.sources as sources
from data_tools.records import Record, RecordSet
from data_tools.sources import cache_dir, class_mismatch, is_dataset_path, load_any, select_split
from data_tools.store import DatasetFileError, load_dataset, save_dataset
from detect.verbs.retail_data import main


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RETAIL_DETECT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "datasets"


def test_a_label_folder_is_converted_once_and_cached_outside_it(dataset, cache, monkeypatch):
    before = tree_hashes(dataset)
    lines: list[str] = []
    rs = load_any(dataset, log=lines.append)
    assert len(rs) == 2 and rs.class_names == ["beans", "cake"]
    assert lines[0].startswith(f"converted {dataset} (voc, detected:") and "  problems: none" in lines
    [cached] = list(cache.glob("ds-*.pkl"))
    assert tree_hashes(dataset) == before  # nothing written into the label folder
    monkeypatch.setattr(sources, "convert", lambda *a, **k: pytest.fail("converted again"))
    lines.clear()
    assert len(load_any(dataset, log=lines.append)) == 2
    assert "read from the cache" in lines[0] and str(cached) in lines[0]


def test_the_cache_follows_the_labels_the_images_and_the_class_order(dataset, cache):
    load_any(dataset, log=lambda _: None)
    xml = dataset / "annotations" / "good2.xml"
    st = xml.stat()
    text = xml.read_text()
    xml.write_text(text.replace("<xmax>32</xmax>", "<xmax>31</xmax>"))  # same size, same time: only the content
    os.utime(xml, ns=(st.st_atime_ns, st.st_mtime_ns))
    rs = load_any(dataset, log=lambda _: None)
    assert rs.records[1].boxes.tolist() == [[0, 0, 31, 24]] and len(list(cache.glob("*.pkl"))) == 2
    xml.write_text(voc_xml("good2.jpg", objects=[("cake", 1, 1, 9, 9), ("beans", 2, 2, 8, 8)]))
    rs = load_any(dataset, log=lambda _: None)
    assert sum(r.num_boxes for r in rs.records) == 4 and len(list(cache.glob("*.pkl"))) == 3
    img = dataset / "images" / "good1.jpg"
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))  # an image saved again
    load_any(dataset, log=lambda _: None)
    assert len(list(cache.glob("*.pkl"))) == 4
    make_image(img, (32, 24), mode="L")  # same name, another image
    load_any(dataset, log=lambda _: None)
    assert len(list(cache.glob("*.pkl"))) == 5
    rs = load_any(dataset, ["cake", "beans"], log=lambda _: None)
    assert rs.class_names == ["cake", "beans"] and len(list(cache.glob("*.pkl"))) == 6


def test_a_damaged_or_unwritable_cache_converts_again(dataset, cache, tmp_path):
    load_any(dataset, log=lambda _: None)
    [cached] = list(cache.glob("*.pkl"))
    cached.write_bytes(b"\x80garbage")
    lines: list[str] = []
    assert len(load_any(dataset, log=lines.append)) == 2 and any("unusable" in s for s in lines)
    os.environ["RETAIL_DETECT_CACHE"] = str(tmp_path / "file")
    (tmp_path / "file").write_text("not a folder")
    lines.clear()
    assert len(load_any(dataset, log=lines.append)) == 2 and any("could not cache" in s for s in lines)


def test_what_counts_as_a_dataset_file(tmp_path, dataset):
    save_dataset(RecordSet(["a"], str(tmp_path), [], {}), tmp_path / "renamed.data")
    assert is_dataset_path(tmp_path / "renamed.data") and is_dataset_path(tmp_path / "missing.pkl")
    assert not is_dataset_path(dataset) and not is_dataset_path(tmp_path / "missing")
    assert load_any(tmp_path / "renamed.data").class_names == ["a"]  # a dataset file under any name
    with pytest.raises(DatasetFileError, match="not a regular file"):  # the store reads dataset files only
        load_dataset(dataset)
    with pytest.raises(ValueError, match="does not exist .give a dataset .pkl, or a label folder"):
        load_any(tmp_path / "missing")


def test_select_split_by_role():
    recs = [Record(f"{i}.jpg", 8, 8, split=s) for i, s in enumerate(["train", "train", "val", "test", ""])]
    rs = RecordSet(["a"], "/r", recs, {})
    msgs: list[str] = []
    assert [r.image for r in select_split(rs, "train", "x", msgs.append).records] == ["0.jpg", "1.jpg"]
    assert msgs == ["x: using its 'train' split (2 of 5 images)"]
    assert [r.image for r in select_split(rs, "eval", "x", msgs.append).records] == ["3.jpg"]
    only_train = rs.subset([0, 1])
    with pytest.raises(ValueError, match="has no 'val' split .its splits: train 2"):
        select_split(only_train, "val", "x")
    plain = RecordSet(["a"], "/r", [Record("a.jpg", 8, 8)], {})
    assert select_split(plain, "train", "x") is plain


def test_class_mismatch_says_how_to_fix_it(tmp_path):
    """The suggested rebuild writes a new file, never over the dataset (a split's val.pkl would become all photos)
    or another existing file, and says to split again when the dataset was one part of a split."""
    val = tmp_path / "val.pkl"
    val.write_bytes(b"x")
    msg = class_mismatch("val.pkl", ["b", "a"], ["a", "b"], "data.train=train.pkl", "labels/", path=str(val))
    assert "same classes as data.train=train.pkl in another order" in msg
    new = tmp_path / "val-reordered.pkl"
    assert f"retail-data convert labels/ -o {new} --classes-from TRAIN.pkl" in msg and "--classes" in msg
    assert "split" not in msg.replace("data.train", "")
    new.write_bytes(b"x")
    msg = class_mismatch("data.val=val.pkl", ["c"], ["a", "b"], "data.train=train.pkl", "labels/", path=str(val),
                         split="val")
    assert f"-o {tmp_path / 'val-reordered-2.pkl'} " in msg and "has other classes (c)" in msg
    assert "was the 'val' part of a split and this converts all of labels/" in msg


def test_boxes_of_classes_unknown_to_the_class_list_are_counted_and_warned(dataset, cache):
    """Labels converted in a checkpoint's class order where none of their classes is known: every box is dropped,
    and the warning says how many, which classes, and what to do (before: "AP n/a" for every class, silently)."""
    rs = load_any(dataset, ["cola", "chips"], log=lambda _: None)
    conv = rs.meta["conversion"]
    assert (conv["unknown_boxes"], conv["unknown_classes"], conv["unknown_names"]) == (3, 2, ["'cake'", "'beans'"])
    warning = sources.unknown_class_warning(rs, "labels", "the checkpoint best.pt")
    assert warning.startswith("warning: labels has no boxes of a class the checkpoint best.pt knows: 3 boxes of 2 "
                              "classes that the checkpoint best.pt does not know ('cake', 'beans'; it knows cola, chips)")
    assert "every AP is n/a" in warning and "\n" not in warning
    cached = load_any(dataset, ["cola", "chips"], log=lambda _: None)  # the counts come back from the cache too
    assert sources.unknown_class_warning(cached, "labels", "the checkpoint best.pt") == warning
    some = load_any(dataset, ["cake", "tea"], log=lambda _: None)
    assert "1 box of 1 class that it does not know ('beans'" in sources.unknown_class_warning(some, "labels", "it") and "left out of the scores" \
        in sources.unknown_class_warning(some, "labels", "it")
    assert sources.unknown_class_warning(load_any(dataset, log=lambda _: None), "labels", "it") is None


def test_unknown_class_names_as_each_reader_writes_them():
    from data_tools.records import Problem

    problems = [Problem("a", "unknown class 'bean' (did you mean 'beans'?)", kind="unknown_class"),
                Problem("a", "annotation id 4: unknown class (category_id 7)", kind="unknown_class"),
                Problem("a", "class id 9 is not in the 2 class names (ids 0..1)", kind="unknown_class"),
                Problem("a", "unknown class 'bean'", kind="unknown_class"), Problem("a", "x", kind="missing_image")]
    assert sources.unknown_classes(problems) == {"'bean'": 2, "category_id 7": 1, "class id 9": 1}


def test_stats_and_split_take_a_label_folder(dataset, cache, tmp_path, capsys):
    assert main(["stats", str(dataset), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["images"] == 2 and "converted" in err  # the summary goes to stderr
    add_pair(dataset, "good3", [("beans", 1, 1, 9, 9)])
    assert main(["split", str(dataset), "-o", str(tmp_path / "sp"), "--val", "0.34"]) == 0
    assert len(load_dataset(tmp_path / "sp" / "train.pkl")) == 2 and len(load_dataset(tmp_path / "sp" / "val.pkl")) == 1


def test_split_keeps_the_splits_the_labels_came_with(tmp_path, cache, capsys):
    root = tmp_path / "y"
    for split, n in (("train", 3), ("val", 1)):
        for i in range(n):
            make_image(root / "images" / split / f"{split}{i}.jpg", (40, 20))
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{split}{i}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "data.yaml").write_text("names: [cola]\n")
    assert main(["split", str(root), "-o", str(tmp_path / "sp")]) == 0
    assert "came split (train, val): kept as it is" in capsys.readouterr().out
    assert len(load_dataset(tmp_path / "sp" / "train.pkl")) == 3 and len(load_dataset(tmp_path / "sp" / "val.pkl")) == 1
    assert main(["split", str(root), "-o", str(tmp_path / "sp2"), "--val", "0.5"]) == 0  # --val splits again
    train, val = load_dataset(tmp_path / "sp2" / "train.pkl"), load_dataset(tmp_path / "sp2" / "val.pkl")
    assert len(val) == 2 and len(train) == 2
    assert select_split(train, "train", "t") is train  # the new split is the file: no old split left to filter by


def test_classes_from_another_dataset_fixes_the_order(dataset, tmp_path, capsys):
    train = tmp_path / "train.pkl"
    save_dataset(RecordSet(["cake", "beans", "tea"], str(dataset), [], {}), train)
    assert main(["convert", str(dataset), "-o", str(tmp_path / "val.pkl"), "--classes-from", str(train),
                 "--quiet"]) == 0
    assert load_dataset(tmp_path / "val.pkl").class_names == ["cake", "beans", "tea"]
    assert main(["convert", str(dataset), "-o", str(tmp_path / "x.pkl"), "--classes-from", str(train),
                 "--classes", str(train)]) == 2
    assert "not allowed with" in capsys.readouterr().err


def test_coco_json_away_from_its_images_with_image_root(tmp_path, capsys):
    make_image(tmp_path / "photos" / "shelf" / "a.jpg", (40, 30))
    doc = {"images": [{"id": 1, "file_name": "shelf/a.jpg", "width": 40, "height": 30}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10]}],
           "categories": [{"id": 1, "name": "tea"}]}
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "train.json").write_text(json.dumps(doc))
    out = tmp_path / "d.pkl"
    assert main(["convert", str(tmp_path / "labels" / "train.json"), "-o", str(out), "--quiet"]) == 1
    printed = capsys.readouterr()  # without it the image is looked for beside the JSON, and the error says so
    assert "missing_image 1" in printed.out and "give --image-root DIR" in printed.err
    assert main(["stats", str(tmp_path / "labels" / "train.json")]) == 1  # no --image-root there: says what to do
    assert "convert it with retail-data convert" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "labels" / "train.json"), "-o", str(out), "--quiet",
                 "--image-root", str(tmp_path / "photos")]) == 0
    rs = load_dataset(out)
    assert [r.image for r in rs.records] == ["shelf/a.jpg"] and rs.image_root == str(tmp_path / "photos")
    assert main(["convert", str(tmp_path / "photos"), "-o", str(out), "--format", "voc", "--image-root",
                 str(tmp_path)]) == 1
    assert "--image-root is for coco, cvat, labelstudio and csv" in capsys.readouterr().err


def test_export_verb(dataset, tmp_path, capsys):
    out = tmp_path / "yolo"
    assert main(["export", str(dataset), "--format", "yolo", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and (out / "data.yaml").is_file()
    assert main(["export", str(dataset), "--format", "voc", "-o", str(out)]) == 1  # not empty
    assert "not empty" in capsys.readouterr().err
    assert main(["export", str(dataset), "--format", "voc", "-o", str(dataset / "export")]) == 1
    assert "inside the dataset's image folder" in capsys.readouterr().err and not (dataset / "export").exists()
    gt = tmp_path / "gt.xml"
    assert main(["export", str(dataset), "--format", "cvat", "-o", str(gt)]) == 0
    assert "--image-root" in capsys.readouterr().out
    assert main(["export", str(dataset), "--format", "cvat", "-o", str(gt)]) == 0  # its own output: replaced
    notes = tmp_path / "notes.csv"
    notes.write_text("my notes\n")
    assert main(["export", str(dataset), "--format", "csv", "-o", str(notes)]) == 1
    assert notes.read_text() == "my notes\n"


def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("RETAIL_DETECT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "retail-detect" / "datasets"


def test_a_cached_file_replaced_by_another_dataset_converts_again(dataset, cache, tmp_path):
    """Another valid dataset under the cached name (copied in, or another source's): its key differs, so the labels
    are converted again instead of the other dataset being used."""
    load_any(dataset, log=lambda _: None)
    [cached] = list(cache.glob("*.pkl"))
    assert load_dataset(cached).meta["source_key"].startswith(cached.stem.rsplit("-", 1)[1])
    save_dataset(RecordSet(["other"], str(tmp_path), [Record("x.jpg", 8, 8)], {}), cached)
    lines: list[str] = []
    rs = load_any(dataset, log=lines.append)
    assert rs.class_names == ["beans", "cake"] and len(rs) == 2
    assert lines[0].startswith(f"note: cached dataset {cached} was not converted from {dataset} as it is now")
    assert load_dataset(cached).class_names == ["beans", "cake"]  # the cache holds the right dataset again
    lines.clear()
    load_any(dataset, log=lines.append)
    assert "read from the cache" in lines[0]
