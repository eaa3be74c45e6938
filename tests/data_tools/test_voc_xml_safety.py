"""Bad-input XML cases at the file level: XXE, entity bombs, huge, malformed, empty, wrong encodings.

Each test drops one bad file into a good dataset and converts through the CLI: the bad file is reported
with file and line, the good images still convert, the inputs are unchanged, no temp file is left.
"""

from __future__ import annotations

from dt_helpers import add_pair, cli_convert, images_of, problems_of, voc_xml

import data_tools.voc as voc


def _only_problem(report: dict, stem: str) -> dict:
    rows = problems_of(report, stem)
    assert len(rows) == 1, rows
    assert rows[0]["action"] == "skipped"
    return rows[0]


def test_xxe_external_entity_is_refused(dataset, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    xml = (f'<?xml version="1.0"?>\n<!DOCTYPE a [\n<!ENTITY xxe SYSTEM "file://{secret}">\n]>\n'
           + voc_xml("xxe.jpg", objects=[("&xxe;", 1, 1, 5, 5)]))
    add_pair(dataset, "xxe", xml=xml)
    rc, rs, rep = cli_convert(dataset, tmp_path / "out")
    p = _only_problem(rep, "xxe.xml")
    assert p["kind"] == "dtd_refused" and p["line"] == 2 and "DOCTYPE" in p["reason"]
    assert rc == 0 and images_of(rs) == {"good1", "good2"}
    assert "TOP SECRET" not in str(rep) and all("SECRET" not in n for n in rs.class_names)


def test_billion_laughs_is_refused_quickly(dataset, tmp_path):
    ents = ['<!ENTITY l0 "lol">'] + [f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10)]
    xml = "<?xml version='1.0'?>\n<!DOCTYPE bomb [\n" + "\n".join(ents) + "\n]>\n" + voc_xml(
        "bomb.jpg", objects=[("&l9;", 1, 1, 5, 5)])
    add_pair(dataset, "bomb", xml=xml)
    rc, rs, rep = cli_convert(dataset, tmp_path / "out")
    p = _only_problem(rep, "bomb.xml")
    assert p["kind"] == "dtd_refused" and p["line"] == 2
    assert images_of(rs) == {"good1", "good2"}


def test_utf16_doctype_is_refused(dataset, tmp_path):
    xml = '<?xml version="1.0" encoding="UTF-16"?>\n<!DOCTYPE a [<!ENTITY e "x">]>\n' + voc_xml("u16.jpg")
    add_pair(dataset, "u16", xml=xml.encode("utf-16"))
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    assert _only_problem(rep, "u16.xml")["kind"] == "dtd_refused"
    assert images_of(rs) == {"good1", "good2"}


def test_huge_file_is_refused_before_parsing(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(voc, "MAX_XML_BYTES", 4096)
    xml = voc_xml("huge.jpg", objects=[("beans", 1, 1, 5, 5)], extra="<!-- " + "x" * 5000 + " -->\n")
    add_pair(dataset, "huge", xml=xml)
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    p = _only_problem(rep, "huge.xml")
    assert p["kind"] == "huge_file" and "4,096" in p["reason"]
    assert images_of(rs) == {"good1", "good2"}


def test_malformed_xml_reports_lxml_line(dataset, tmp_path):
    xml = "<annotation>\n<filename>bad.jpg</filename>\n<object>\n<name>beans</name>\n</annotation>\n"
    add_pair(dataset, "bad", xml=xml)
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    p = _only_problem(rep, "bad.xml")
    assert p["kind"] == "malformed_xml" and p["line"] == 5 and "mismatch" in p["reason"]
    assert images_of(rs) == {"good1", "good2"}


def test_undefined_entity_is_malformed(dataset, tmp_path):
    add_pair(dataset, "ent", xml=voc_xml("ent.jpg", objects=[("&nope;", 1, 1, 5, 5)]))
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    p = _only_problem(rep, "ent.xml")
    assert p["kind"] == "malformed_xml" and "nope" in p["reason"] and p["line"] is not None


def test_empty_and_whitespace_files(dataset, tmp_path):
    add_pair(dataset, "empty", xml=b"")
    add_pair(dataset, "blank", xml=b"\xef\xbb\xbf  \n\t\n")
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    assert _only_problem(rep, "empty.xml")["kind"] == "empty_file"
    assert _only_problem(rep, "blank.xml")["kind"] == "empty_file"
    assert images_of(rs) == {"good1", "good2"}


def test_not_a_voc_root_element(dataset, tmp_path):
    add_pair(dataset, "svg", xml="<svg><rect/></svg>")
    _, _, rep = cli_convert(dataset, tmp_path / "out")
    p = _only_problem(rep, "svg.xml")
    assert p["kind"] == "not_voc" and "<svg>" in p["reason"] and p["line"] == 1


def test_undeclared_latin1_bytes_are_a_clear_encoding_problem(dataset, tmp_path):
    xml = voc_xml("lat.jpg", objects=[("caf\xe9", 1, 1, 5, 5)]).encode("latin-1")
    add_pair(dataset, "lat", xml=xml)
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    p = _only_problem(rep, "lat.xml")
    assert p["kind"] == "bad_encoding" and "UTF-8" in p["reason"] and p["line"] is not None
    assert images_of(rs) == {"good1", "good2"}


def test_declared_latin1_is_read(dataset, tmp_path):
    xml = "<?xml version='1.0' encoding='latin-1'?>\n" + voc_xml("lat.jpg", objects=[("café", 1, 1, 5, 5)])
    add_pair(dataset, "lat", xml=xml.encode("latin-1"))
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    assert not problems_of(rep, "lat.xml")
    assert "café" in rs.class_names and images_of(rs) == {"good1", "good2", "lat"}


def test_utf16_with_bom_is_read(dataset, tmp_path):
    add_pair(dataset, "u16", xml=voc_xml("u16.jpg", objects=[("beans", 1, 1, 5, 5)]).encode("utf-16"))
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    assert not problems_of(rep, "u16.xml") and "u16" in images_of(rs)


def test_unknown_encoding_is_reported(dataset, tmp_path):
    add_pair(dataset, "enc", xml="<?xml version='1.0' encoding='klingon-8'?>\n" + voc_xml("enc.jpg"))
    _, rs, rep = cli_convert(dataset, tmp_path / "out")
    p = _only_problem(rep, "enc.xml")
    assert p["kind"] == "bad_encoding" and "klingon-8" in p["reason"] and p["line"] == 1
