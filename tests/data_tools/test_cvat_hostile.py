"""Bad CVAT XML: unsafe XML is refused like VOC's, each bad image or box is reported with its line and place
(``image[2]/box[1]/xbr``) and the good ones are kept."""

from __future__ import annotations

import os

import numpy as np
import pytest
from dt_helpers import cli_convert, make_image, problems_of, run_cli

from data_tools.formats.common import ReadOptions
from data_tools.formats.cvat import CvatError, read_cvat
from detect.verbs.retail_data import main


def _cvat(root, body: str, labels=("cola", "chips"), name="annotations.xml"):
    make_image(root / "images" / "a.jpg", (40, 20))
    make_image(root / "images" / "b.jpg", (40, 20))
    meta = "".join(f"<label><name>{n}</name></label>" for n in labels)
    xml = (f'<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n<version>1.1</version>\n'
           f"<meta><task><labels>{meta}</labels></task></meta>\n{body}</annotations>\n")
    (root / name).write_text(xml)
    return root / name


def test_bad_boxes_and_images_are_reported_with_line_and_place(tmp_path):
    body = ('<image id="0" name="a.jpg" width="40" height="20">\n'
            '<box label="chips" xtl="1" ytl="2" xbr="11.5" ybr="12" occluded="0"/>\n'
            '<box label="cola" xtl="5" ytl="2" xbr="oops" ybr="12"/>\n'
            '<box label="cola" xtl="9" ytl="2" xbr="3" ybr="12"/>\n'
            '<box label="" xtl="1" ytl="2" xbr="3" ybr="4"/>\n'
            '<box label="cola" xtl="10" ytl="5" xbr="20" ybr="15" rotation="90"/>\n'
            '<polygon label="cola" points="1,1;5,5;1,5"/>\n'
            '<box label="fanta" xtl="1" ytl="1" xbr="5" ybr="5"/>\n'
            '</image>\n'
            '<image id="1" name="missing.jpg" width="40" height="20"><box label="cola" xtl="1" ytl="1" xbr="5" ybr="5"/></image>\n'
            '<image id="2" name="../../etc/b.jpg" width="40" height="20"/>\n'
            '<image id="3" name="b.jpg" width="80" height="20"/>\n')
    path = _cvat(tmp_path / "c", body)
    rc, rs, rep = cli_convert(tmp_path / "c", tmp_path / "out")
    rows = {p["field"]: p for p in problems_of(rep, "annotations.xml")}
    assert rows["image[1]/box[2]/xbr"]["line"] == 7 and "non-numeric" in rows["image[1]/box[2]/xbr"]["reason"]
    assert rows["image[1]/box[3]/xbr"]["kind"] == "swapped_box"
    assert rows["image[1]/box[4]/label"]["kind"] == "missing_name"
    assert rows["image[1]/box[5]/rotation"]["action"] == "fixed"
    assert rows["image[1]"]["kind"] == "not_a_box" and rows["image[1]"]["action"] == "ignored"
    assert rows["image[1]/box[6]"]["kind"] == "unknown_class" and "'fanta'" in rows["image[1]/box[6]"]["reason"]
    assert rows["image[2]/name"]["kind"] == "missing_image" and rows["image[2]/name"]["line"] == 14
    assert rows["image[3]/name"]["kind"] == "unsafe_path" and rows["image[3]/name"]["action"] == "fixed"
    assert {p["kind"] for p in problems_of(rep, "annotations.xml") if p["field"] == "image[4]"} == {
        "size_mismatch", "duplicate_image"}
    a = next(r for r in rs.records if r.image == "images/a.jpg")
    np.testing.assert_allclose(a.boxes, [[1, 2, 11.5, 12], [10, 5, 20, 15]])  # the 90-degree box: 10x10 stays
    assert a.labels.tolist() == [2, 1] and rs.class_names == ["cola", "chips"]
    assert len(rs.records) == 2 and rc == 0 and path.is_file()  # b.jpg once: images[2] and [3] are one file


@pytest.mark.parametrize("doc,match", [
    ('<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n<annotations>&x;</annotations>',
     r"annotations\.xml:2: <!DOCTYPE> declarations are refused"),
    ("<annotations>\n<image name='a.jpg'>\n</annotations>", r"annotations\.xml:3: malformed XML"),
    ("<annotation><filename>a.jpg</filename></annotation>", "not CVAT's <annotations>"),
    ("<annotations><track id='0' label='cola'/></annotations>", "CVAT for video"),
], ids=["xxe", "malformed", "voc-not-cvat", "video"])
def test_unusable_files_are_one_clear_line(tmp_path, doc, match):
    path = tmp_path / "annotations.xml"
    path.write_text(doc)
    with pytest.raises(CvatError, match=match):
        read_cvat(str(path), ReadOptions())


def test_cli_refuses_a_broken_cvat_file_in_one_line(tmp_path, capsys):
    path = tmp_path / "job.xml"
    path.write_text("<annotations>\n<image name='a.jpg'>\n</annotations>")
    assert main(["convert", str(path), "-o", str(tmp_path / "d.pkl")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "job.xml:3" in err and not (tmp_path / "d.pkl").exists()


def test_image_root_option(tmp_path):
    path = _cvat(tmp_path / "photos", '<image id="0" name="a.jpg" width="40" height="20"/>\n', name="a.xml")
    moved = tmp_path / "labels" / "a.xml"
    moved.parent.mkdir()
    os.replace(path, moved)
    rs, problems = read_cvat(str(moved), ReadOptions(image_root=str(tmp_path / "photos")))
    assert [r.image for r in rs.records] == ["images/a.jpg"] and not problems


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_fifo_cvat_file_is_refused_without_hanging(tmp_path):
    os.mkfifo(tmp_path / "job.xml")
    r = run_cli("convert", str(tmp_path / "job.xml"), "-o", str(tmp_path / "d.pkl"), "--format", "cvat", timeout=30)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "FIFO" in r.stderr
