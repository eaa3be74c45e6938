"""Files that are not regular files, symlink loops and symlinks leaving the dataset root.

A FIFO or a device named ``*.xml`` / ``*.json`` / ``*.jpg`` / ``*.pkl`` used to hang the run (a FIFO
blocks ``open``) or eat memory (``/dev/zero`` never ends). Each is now reported with the file and the
reason and skipped; the good images still convert. The hang-prone cases run the CLI in a child process
with a timeout and a memory limit, so the old behaviour fails the test instead of stalling the suite.
"""

from __future__ import annotations

import json
import os

import pytest
from dt_helpers import add_pair, cli_convert, images_of, make_image, problems_of, run_cli, voc_xml

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"),
                                reason="needs POSIX FIFOs and /dev/zero")


def _report(tmp_path, name="report.json") -> dict:
    return json.loads((tmp_path / name).read_text(encoding="utf-8"))


def test_fifo_and_device_annotations_and_images_are_skipped(dataset, tmp_path):
    ann = dataset / "annotations"
    os.mkfifo(ann / "fifo.xml")
    os.symlink("/dev/zero", ann / "zero.xml")
    add_pair(dataset, "devimg", [("beans", 1, 1, 5, 5)], image_size=False)
    os.symlink("/dev/zero", dataset / "images" / "devimg.jpg")
    add_pair(dataset, "fifoimg", [("beans", 1, 1, 5, 5)], image_size=False)
    os.mkfifo(dataset / "images" / "fifoimg.jpg")
    out, rep = tmp_path / "d.pkl", tmp_path / "report.json"
    r = run_cli("convert", str(dataset), "-o", str(out), "--report", str(rep), "--quiet", timeout=60)
    assert r.returncode == 0, r.stderr
    doc = _report(tmp_path)
    rows = {os.path.basename(p["file"]): p for p in doc["problems"]}
    assert set(rows) == {"fifo.xml", "zero.xml", "devimg.xml", "fifoimg.xml"}
    assert rows["fifo.xml"]["kind"] == "not_regular_file" and "FIFO" in rows["fifo.xml"]["reason"]
    assert rows["zero.xml"]["kind"] == "not_regular_file" and "character device" in rows["zero.xml"]["reason"]
    assert rows["devimg.xml"]["kind"] == "not_regular_file" and "devimg.jpg" in rows["devimg.xml"]["reason"]
    assert rows["fifoimg.xml"]["kind"] == "not_regular_file" and "FIFO" in rows["fifoimg.xml"]["reason"]
    assert all(p["action"] == "skipped" for p in doc["problems"])
    assert doc["summary"]["images"] == 2 and "zero.xml" in r.stdout


def test_fifo_classes_file_is_refused(dataset, tmp_path):
    os.mkfifo(tmp_path / "classes.txt")
    r = run_cli("convert", str(dataset), "-o", str(tmp_path / "d.pkl"), "--classes", str(tmp_path / "classes.txt"),
                timeout=30)
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "classes.txt" in r.stderr and "FIFO" in r.stderr and not (tmp_path / "d.pkl").exists()


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_special_coco_json_is_refused(tmp_path, kind):
    src = tmp_path / "coco.json"
    os.mkfifo(src) if kind == "fifo" else os.symlink("/dev/zero", src)
    r = run_cli("convert", str(src), "-o", str(tmp_path / "d.pkl"), "--format", "coco", timeout=30)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "coco.json" in r.stderr and "not a regular file" in r.stderr


def test_fifo_dataset_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / "d.pkl")
    r = run_cli("stats", str(tmp_path / "d.pkl"), timeout=30)
    assert r.returncode == 1 and "d.pkl" in r.stderr and "FIFO" in r.stderr


def test_symlink_loops_are_reported_and_skipped(dataset, tmp_path):
    ann = dataset / "annotations"
    os.symlink(ann / "loop2.xml", ann / "loop1.xml")
    os.symlink(ann / "loop1.xml", ann / "loop2.xml")
    add_pair(dataset, "loopimg", [("beans", 1, 1, 5, 5)], image_size=False)
    os.symlink(dataset / "images" / "loopimg.jpg", dataset / "images" / "loopimg.jpg")
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    for name in ("loop1.xml", "loop2.xml", "loopimg.xml"):
        [p] = problems_of(rep, name)
        assert p["kind"] == "symlink_loop" and "symlink loop" in p["reason"] and p["action"] == "skipped"
    assert "loopimg.jpg" in problems_of(rep, "loopimg.xml")[0]["reason"]
    assert images_of(rs) == {"good1", "good2"}


def test_symlinks_leaving_the_dataset_root_are_skipped(dataset, tmp_path):
    outside = tmp_path / "private"
    make_image(outside / "secret.jpg")
    (outside / "secret.xml").write_text(voc_xml("good1.jpg", objects=[("secret_class", 1, 1, 5, 5)]))
    os.symlink(outside / "secret.xml", dataset / "annotations" / "linked.xml")
    add_pair(dataset, "escape", [("beans", 1, 1, 5, 5)], image_size=False)
    os.symlink(outside / "secret.jpg", dataset / "images" / "escape.jpg")
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    [p] = problems_of(rep, "linked.xml")
    assert p["kind"] == "outside_root" and "outside the dataset root" in p["reason"]
    [p] = problems_of(rep, "escape.xml")
    assert p["kind"] == "outside_root" and "escape.jpg" in p["reason"] and p["action"] == "skipped"
    assert images_of(rs) == {"good1", "good2"} and "secret_class" not in rs.class_names


def test_symlinks_inside_the_root_are_fine(dataset, tmp_path):
    add_pair(dataset, "alias", [("beans", 1, 1, 5, 5)], image_size=False)
    os.symlink("good2.jpg", dataset / "images" / "alias.jpg")  # relative link, stays inside
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    assert problems_of(rep, "alias.xml") == [] and "alias" in images_of(rs)


def test_dataset_root_reached_through_a_symlink(dataset, tmp_path):
    link = tmp_path / "link_to_ds"
    os.symlink(dataset, link)
    _, rs, rep = cli_convert(link, tmp_path / "out")
    assert rep["problems"] == [] and images_of(rs) == {"good1", "good2"}


def test_coco_image_symlinked_outside_the_root_is_skipped(tmp_path):
    root = tmp_path / "coco"
    make_image(root / "a.jpg", (40, 30))
    make_image(tmp_path / "elsewhere" / "b.jpg", (40, 30))
    os.symlink(tmp_path / "elsewhere" / "b.jpg", root / "b.jpg")
    os.symlink(root / "c.jpg", root / "c.jpg")
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}, {"id": 2, "file_name": "b.jpg"},
                      {"id": 3, "file_name": "c.jpg"}],
           "annotations": [], "categories": [{"id": 1, "name": "tea"}]}
    (root / "gt.json").write_text(json.dumps(doc))
    from data_tools.coco import read_coco

    rs, problems = read_coco(root / "gt.json")
    assert [r.image for r in rs.records] == ["a.jpg"]
    kinds = {p.field: p.kind for p in problems}
    assert kinds == {"images[1]/file_name": "outside_root", "images[2]/file_name": "symlink_loop"}


def test_image_folder_symlinked_outside_the_root_is_refused(dataset, tmp_path):
    make_image(tmp_path / "mounted" / "far.jpg")
    os.symlink(tmp_path / "mounted", dataset / "images" / "linked")
    add_pair(dataset, "far", [("beans", 1, 1, 5, 5)], image_size=False, folder="linked")
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    [p] = problems_of(rep, "far.xml")
    assert p["kind"] == "outside_root" and str(tmp_path / "mounted" / "far.jpg") in p["reason"]
    assert images_of(rs) == {"good1", "good2"}


@pytest.mark.parametrize("fmt", ["voc", "csv"])
def test_classes_txt_linked_outside_the_label_folder_is_not_read(dataset, tmp_path, fmt):
    """A ``classes.txt`` symlink to a file outside the folder (``/etc/passwd``: every line became a class) is refused
    like every other label file: reported as ignored, the classes found are sorted."""
    from data_tools.convert import convert

    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\ncake\n")
    if fmt == "csv":
        folder = tmp_path / "csvds"
        make_image(folder / "a.jpg")
        (folder / "boxes.csv").write_text("image,x1,y1,x2,y2,label\na.jpg,1,1,9,9,cake\na.jpg,2,2,8,8,beans\n")
        src = folder / "boxes.csv"
    else:
        folder = src = dataset
    os.symlink(secret, folder / "classes.txt")
    rs, problems, _ = convert(src, progress=False)
    assert rs.class_names == ["beans", "cake"]
    [p] = [p for p in problems if p.file.endswith("classes.txt")]
    assert p.kind == "outside_root" and p.action == "ignored" and "class order is not used" in p.reason
    assert "root:x" not in " ".join(rs.class_names)
    os.remove(folder / "classes.txt")
    (folder / "classes.txt").write_text("cake\nbeans\n")  # a real one inside the folder still orders the classes
    assert convert(src, progress=False)[0].class_names == ["cake", "beans"]
