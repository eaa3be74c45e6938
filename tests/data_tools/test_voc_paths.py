"""Bad-input path cases: ``../`` and absolute ``<filename>``, missing images, non-ASCII names, and the
image search order (next to the XML, sibling images/ or JPEGImages/ tree, by stem)."""

from __future__ import annotations

import os
import unicodedata

import pytest
from dt_helpers import add_pair, cli_convert, images_of, line_of, make_image, problems_of, voc_xml

from data_tools.voc import read_voc


@pytest.mark.parametrize("filename", ["../../../etc/passwd", "../../outside.jpg", "/etc/passwd",
                                      "C:\\Users\\me\\esc.jpg", "\\\\server\\share\\esc.jpg"])
def test_escaping_filename_is_ignored_and_found_by_stem_inside_root(dataset, tmp_path, filename):
    make_image(tmp_path / "outside.jpg")  # exists, but outside the dataset root
    add_pair(dataset, "esc", xml=voc_xml(filename, objects=[("beans", 1, 1, 5, 5)]))
    make_image(dataset / "images" / "esc.jpg")
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    [p] = problems_of(rep, "esc.xml")
    assert p["kind"] == "unsafe_path" and p["action"] == "fixed" and p["field"] == "filename"
    assert p["line"] == line_of(dataset / "annotations" / "esc.xml", "<filename>")
    assert "images/esc.jpg" in p["reason"]
    assert {r.image for r in rs.records if "esc" in r.image} == {"images/esc.jpg"}


def test_escaping_filename_without_image_in_root_is_skipped(dataset, tmp_path):
    make_image(tmp_path / "outside.jpg")
    ann = dataset / "annotations" / "esc.xml"
    ann.write_text(voc_xml("../../outside.jpg", objects=[("beans", 1, 1, 5, 5)]))
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    [p] = problems_of(rep, "esc.xml")
    assert p["kind"] == "unsafe_path" and p["action"] == "skipped"
    assert all("outside" not in r.image for r in rs.records) and images_of(rs) == {"good1", "good2"}


def test_dotdot_that_stays_inside_the_root_is_fine(dataset, tmp_path):
    add_pair(dataset, "rel", xml=voc_xml("../images/rel.jpg", objects=[("beans", 1, 1, 5, 5)]))
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    assert problems_of(rep, "rel.xml") == [] and "rel" in images_of(rs)


def test_missing_image_is_skipped_with_its_line(dataset, tmp_path):
    add_pair(dataset, "ghost", [("beans", 1, 1, 5, 5)], image_size=False)
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    [p] = problems_of(rep, "ghost.xml")
    assert p["kind"] == "missing_image" and "ghost.jpg" in p["reason"] and p["action"] == "skipped"
    assert p["line"] == line_of(dataset / "annotations" / "ghost.xml", "<filename>")
    assert images_of(rs) == {"good1", "good2"}


def test_non_ascii_folders_files_and_classes(dataset, tmp_path):
    add_pair(dataset, "Schokolade_ü_日本", [("Süßigkeiten", 1, 1, 5, 5)], folder="süß")
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    assert rep["problems"] == []
    rec = next(r for r in rs.records if "ü" in r.image)
    assert rec.image == "images/süß/Schokolade_ü_日本.jpg" and "Süßigkeiten" in rs.class_names


def test_nfd_file_on_disk_matches_nfc_filename(dataset, tmp_path):
    nfc = "café"
    make_image(dataset / "images" / (unicodedata.normalize("NFD", nfc) + ".jpg"))
    (dataset / "annotations" / "cafe.xml").write_text(voc_xml(nfc + ".jpg", objects=[("beans", 1, 1, 5, 5)]),
                                                      encoding="utf-8")
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    assert problems_of(rep, "cafe.xml") == [] and len(rs) == 3


def test_voc2007_layout(tmp_path):
    root = tmp_path / "VOC2007"
    make_image(root / "JPEGImages" / "000005.jpg")
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "000005.xml").write_text(voc_xml("000005.jpg", objects=[("chair", 1, 1, 9, 9)]))
    rec, problems = read_voc(root / "Annotations" / "000005.xml", root=root)
    assert problems == [] and rec.image == "JPEGImages/000005.jpg"


def test_image_next_to_the_xml(tmp_path):
    make_image(tmp_path / "flat" / "a.png")
    (tmp_path / "flat" / "a.xml").write_text(voc_xml("a.png", objects=[("x", 1, 1, 9, 9)]))
    rec, problems = read_voc(tmp_path / "flat" / "a.xml", root=tmp_path / "flat")
    assert problems == [] and rec.image == "a.png"


def test_stale_extension_is_found_by_stem_and_reported(dataset, tmp_path):
    add_pair(dataset, "conv", xml=voc_xml("conv.png", objects=[("beans", 1, 1, 5, 5)]))  # image is conv.jpg
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    [p] = problems_of(rep, "conv.xml")
    assert p["kind"] == "filename_mismatch" and p["action"] == "fixed" and "images/conv.jpg" in p["reason"]
    assert "conv" in images_of(rs)


def test_missing_filename_element_uses_the_xml_stem(dataset, tmp_path):
    add_pair(dataset, "nofn", xml=voc_xml(None, objects=[("beans", 1, 1, 5, 5)]))
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    [p] = problems_of(rep, "nofn.xml")
    assert p["kind"] == "missing_filename" and "nofn" in images_of(rs)


def test_two_annotations_of_one_image(dataset, tmp_path):
    (dataset / "annotations" / "good1 copy.xml").write_text(voc_xml("good1.jpg", objects=[("beans", 1, 1, 5, 5)]))
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    [p] = problems_of(rep, "good1 copy.xml")
    assert p["kind"] == "duplicate_image" and len(rs) == 2


def test_two_names_of_one_image_by_a_hard_link(dataset, tmp_path):
    """``good3.jpg`` is a hard link to ``good1.jpg``: two annotations of one photo, like a copy of its XML."""
    os.link(dataset / "images" / "good1.jpg", dataset / "images" / "good3.jpg")
    (dataset / "annotations" / "good3.xml").write_text(voc_xml("good3.jpg", objects=[("beans", 1, 1, 5, 5)]))
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    [p] = problems_of(rep, "good3.xml")
    assert p["kind"] == "duplicate_image" and len(rs) == 2
