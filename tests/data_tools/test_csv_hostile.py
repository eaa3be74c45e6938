"""Box-per-row CSVs: SKU-110K's headerless layout, other column names, and bad rows reported with their line and
column while the good rows are kept."""

from __future__ import annotations

import os

import numpy as np
import pytest
from dt_helpers import cli_convert, make_image, problems_of, run_cli

from data_tools.formats.common import ReadOptions
from data_tools.formats.csv_boxes import CsvError, parse_columns, read_csv_boxes
from detect.verbs.retail_data import main


def _csv(root, text: str, name: str = "boxes.csv"):
    for n in ("a.jpg", "b.jpg"):
        make_image(root / "images" / n, (40, 20))
    (root / name).write_text(text)
    return root / name


def test_sku110k_rows_without_a_header(tmp_path):
    path = _csv(tmp_path / "sku", "a.jpg,1,2,11,12,object,40,20\na.jpg,20,2,30.5,18,object,40,20\nb.jpg,0,0,40,20,object,40,20\n")
    rs, problems = read_csv_boxes(str(path), ReadOptions())
    assert [p.kind for p in problems] == ["no_header"] and problems[0].action == "ignored"
    assert rs.class_names == ["object"] and [r.num_boxes for r in rs.records] == [2, 1]
    np.testing.assert_allclose(rs.records[0].boxes, [[1, 2, 11, 12], [20, 2, 30.5, 18]])


def test_bad_rows_are_reported_with_line_and_column(tmp_path):
    text = ("filename,xmin,ymin,xmax,ymax,class,image_width,image_height\n"
            "a.jpg,1,2,11,12,cola,40,20\n"
            "a.jpg,1,2,x,12,cola,40,20\n"
            "a.jpg,9,2,3,12,cola,40,20\n"
            "a.jpg,1,2,5,nan,cola,40,20\n"
            "a.jpg,1,2,5,6,,40,20\n"
            ",1,2,5,6,cola,40,20\n"
            "missing.jpg,1,2,5,6,cola,40,20\n"
            "missing.jpg,1,2,5,6,cola,40,20\n"
            "b.jpg,,,,,,40,20\n"
            "a.jpg,35,15,50,30,chips,40,20\n")
    _csv(tmp_path / "c", text)
    rc, rs, rep = cli_convert(tmp_path / "c", tmp_path / "out")
    rows = {(p["line"], p["field"]): p for p in problems_of(rep, "boxes.csv")}
    assert set(rows) == {(3, "column 4 (x2)"), (4, "column 4 (x2)"), (5, "column 5 (y2)"), (6, "column 6 (label)"),
                         (7, "column 1 (image)"), (8, "column 1 (image)"), (11, "column 6 (label)")}
    assert rows[(3, "column 4 (x2)")]["kind"] == "bad_coordinate" and "'x'" in rows[(3, "column 4 (x2)")]["reason"]
    assert rows[(4, "column 4 (x2)")]["kind"] == "swapped_box" and rows[(5, "column 5 (y2)")]["kind"] == "bad_coordinate"
    assert rows[(8, "column 1 (image)")]["kind"] == "missing_image" and "(2 rows)" in rows[(8, "column 1 (image)")]["reason"]
    assert rows[(11, "column 6 (label)")]["kind"] == "box_clipped"
    by = {os.path.basename(r.image): r for r in rs.records}
    np.testing.assert_allclose(by["a.jpg"].boxes, [[1, 2, 11, 12], [35, 15, 40, 20]])
    assert by["b.jpg"].num_boxes == 0 and rc == 0 and rs.class_names == ["chips", "cola"]


def test_named_columns_and_tabs(tmp_path):
    path = _csv(tmp_path / "t", "img\tleft\ttop\tright\tbottom\tsku\na.jpg\t1\t2\t11\t12\tcola\n", name="boxes.tsv")
    rs, problems = read_csv_boxes(str(path), ReadOptions(csv_columns=parse_columns("image=img,label=sku,x1=left,"
                                                                                   "y1=top,x2=right,y2=bottom")))
    assert not problems and rs.records[0].boxes.tolist() == [[1, 2, 11, 12]]
    with pytest.raises(CsvError, match="header has no column 'product'"):
        read_csv_boxes(str(path), ReadOptions(csv_columns={"label": "product"}))
    with pytest.raises(CsvError, match="KEY=COLUMN"):
        parse_columns("colour=red")


def test_unusable_csvs_are_one_clear_line(tmp_path, capsys):
    path = _csv(tmp_path / "u", "picture,a,b\nx,y,z\n")
    assert main(["convert", str(path), "-o", str(tmp_path / "d.pkl")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "boxes.csv:1: cannot find the column(s)" in err and "--csv-columns" in err
    (tmp_path / "empty.csv").write_text("")
    assert main(["convert", str(tmp_path / "empty.csv"), "-o", str(tmp_path / "d.pkl")]) == 1
    assert "empty CSV" in capsys.readouterr().err


def test_a_broken_row_stops_reading_but_keeps_the_rows_before(tmp_path):
    huge = "x" * 200_000  # over the csv module's field limit
    path = _csv(tmp_path / "n", f"image,x1,y1,x2,y2,label\na.jpg,1,2,11,12,cola\nb.jpg,1,2,11,12,{huge}\n"
                               "b.jpg,1,2,11,12,cola\n")
    rs, problems = read_csv_boxes(str(path), ReadOptions())
    assert [os.path.basename(r.image) for r in rs.records] == ["a.jpg"]
    assert [(p.kind, p.line) for p in problems] == [("bad_line", 3)] and "not read" in problems[0].reason


def test_image_outside_the_root_is_refused(tmp_path):
    make_image(tmp_path / "secret" / "s.jpg", (40, 20))
    path = _csv(tmp_path / "c", "image,x1,y1,x2,y2,label\n../secret/s.jpg,1,2,11,12,cola\n/etc/a.jpg,1,2,11,12,cola\n")
    rs, problems = read_csv_boxes(str(path), ReadOptions())
    kinds = {(p.line, p.kind, p.action) for p in problems}
    # ../secret is looked up from the root and its images/ folder only: s.jpg is never read; a.jpg is in the root
    assert kinds == {(2, "missing_image", "skipped"), (3, "unsafe_path", "fixed")}
    assert [r.image for r in rs.records] == ["images/a.jpg"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_fifo_csv_is_refused_without_hanging(tmp_path):
    os.mkfifo(tmp_path / "boxes.csv")
    r = run_cli("convert", str(tmp_path / "boxes.csv"), "-o", str(tmp_path / "d.pkl"), timeout=30)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "FIFO" in r.stderr


def test_a_header_cell_over_the_csv_field_limit_is_one_line(tmp_path):
    path = _csv(tmp_path / "h", "image," + "x" * 200_000 + ",y1,x2,y2,label\na.jpg,1,2,3,4,cola\n")
    with pytest.raises(CsvError) as e:
        read_csv_boxes(str(path), ReadOptions())
    assert str(e.value).startswith(f"{path}:1: unreadable CSV header (field larger than field limit")
    assert len(str(e.value)) < 300


def test_an_overlong_line_stops_the_reading_at_its_number_and_earlier_rows_load(tmp_path):
    from data_tools.formats.csv_boxes import MAX_CSV_LINE
    text = ("image,x1,y1,x2,y2,label\na.jpg,1,2,11,12,cola\nb.jpg,1,2," + "9" * (MAX_CSV_LINE + 10)
            + ",12,cola\nb.jpg,1,2,11,12,cola\n")
    path = _csv(tmp_path / "l", text)
    rs, problems = read_csv_boxes(str(path), ReadOptions())
    bad = [p for p in problems if p.kind == "bad_line"]
    assert len(bad) == 1 and f"line 3 is over {MAX_CSV_LINE:,} characters" in bad[0].reason
    assert [r.image for r in rs.records] == ["images/a.jpg"]


def test_cr_line_endings_and_quoted_newlines_still_parse(tmp_path):
    text = 'image,x1,y1,x2,y2,label\r"a.jpg",1,2,11,12,"co\nla"\rb.jpg,1,2,11,12,chips\r'
    path = _csv(tmp_path / "cr", text)
    rs, problems = read_csv_boxes(str(path), ReadOptions())
    assert sorted(rs.class_names) == ["chips", "co la"] and len(rs.records) == 2


def test_hard_linked_and_absolute_image_names(tmp_path):
    """The readers of :mod:`data_tools.formats`: an image under a second name by a hard link is a duplicate; an
    absolute name of a file inside the folder is that file, not the first of its base name (``images/a.jpg``)."""
    root = tmp_path / "csv"
    make_image(root / "shelf" / "a.jpg", (30, 20))
    path = _csv(root, "")
    os.link(root / "images" / "b.jpg", root / "images" / "b2.jpg")
    path.write_text(f"image,x1,y1,x2,y2,label\n{root / 'shelf' / 'a.jpg'},1,1,9,9,tea\n"
                    "b.jpg,1,1,9,9,tea\nb2.jpg,2,2,9,9,tea\n")
    rs, problems = read_csv_boxes(str(path), ReadOptions())
    assert [(r.image, r.width) for r in rs.records] == [("shelf/a.jpg", 30), ("images/b.jpg", 40)]
    assert [p.kind for p in problems] == ["duplicate_image"] and "b2.jpg" in problems[0].reason
