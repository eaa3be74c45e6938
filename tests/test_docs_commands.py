"""The user's docs say only what runs: every ``retail-data`` / ``retail-detect`` command line in README.md,
ARCHITECTURE.md and docs/ parses with the real argument parser of its CLI (built without running the verb),
and every relative link points at a file that exists (and, for ``FILE.md#anchor``, at a heading there).

Commands are taken from ```bash blocks (every line, comments stripped, ``\\`` continuations joined) and from
the transcripts in other blocks (lines ``$ retail-...``); a transcript line eliding arguments with ``...`` is
an abridged example, not a command, and is skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

import detect.cli as detect_cli
import detect.verbs.retail_data as data_cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").rglob("*.md"))]
CLIS = ("retail-data", "retail-detect")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _blocks(text: str) -> list[tuple[str, list[tuple[int, str]]]]:
    """``[(language, [(line number, line), ...]), ...]`` for every fenced block of a Markdown text."""
    blocks, current, lang, fence = [], None, "", ""
    for no, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if current is None and m:
            current, lang, fence = [], m.group(3).strip().lower(), m.group(2)
        elif current is not None and m and m.group(2).startswith(fence[0]) and len(m.group(2)) >= len(fence) \
                and not m.group(3).strip():
            blocks.append((lang, current))
            current = None
        elif current is not None:
            current.append((no, line))
    return blocks


def test_every_code_block_is_closed_and_holds_something():
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        blocks = _blocks(text)
        fences = sum(1 for line in text.splitlines() if FENCE.match(line))
        assert fences == 2 * len(blocks), f"{doc.relative_to(ROOT)}: a code fence is not closed"
        for _, lines in blocks:
            assert any(line.strip() for _, line in lines), f"{doc.relative_to(ROOT)}: an empty code block"


def _joined(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Lines with their ``\\`` continuations joined, numbered by their first line."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for no, line in lines:
        if pending is not None:
            no, line = pending[0], pending[1] + " " + line.strip()
            pending = None
        if line.rstrip().endswith("\\"):
            pending = (no, line.rstrip()[:-1])
        else:
            out.append((no, line))
    if pending is not None:
        out.append(pending)
    return out


def _argv(line: str, bash: bool) -> list[str] | None:
    """The argv of a documented ``retail-*`` command on ``line`` (up to a pipe or redirection), else None."""
    text = line.strip()
    if not bash:
        if not text.startswith("$ "):
            return None
        text = text[2:]
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        return None
    if not words or words[0] not in CLIS:
        return None
    for i, w in enumerate(words):
        if w in ("|", "||", "&&", ";", ">", ">>", "2>", "<"):
            words = words[:i]
            break
    if not bash and ("..." in words[1:] or any(w.startswith("...") for w in words[1:])):
        return None  # an abridged transcript line
    return words


def documented_commands() -> list[tuple[str, list[str]]]:
    """``[("FILE:LINE", argv), ...]`` of every command line the docs show."""
    found = []
    for doc in DOCS:
        for lang, lines in _blocks(doc.read_text(encoding="utf-8")):
            bash = lang in ("bash", "sh", "shell")
            for no, line in _joined(lines):
                argv = _argv(line, bash)
                if argv is not None:
                    found.append((f"{doc.relative_to(ROOT)}:{no}", argv))
    return found


def _parser(module) -> argparse.ArgumentParser:
    """The CLI's own parser, built as its ``main`` builds it, without running any verb."""
    build = getattr(module, "build_parser", None) or getattr(module, "_parser", None)
    assert build is not None, f"{module.__name__} has no parser builder (build_parser)"
    return build()


def _parse(cli: str, args: list[str]) -> None:
    """Parse ``args`` as ``cli``'s ``main`` does; AssertionError with argparse's message when refused."""
    err = io.StringIO()
    args = [a for a in args if a != "--debug"]  # data_tools.cli_frame.run_cli takes --debug anywhere on the line
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            if cli == "retail-data":
                _parser(data_cli).parse_args(args)
            else:
                parser = _parser(detect_cli)
                ns, extra = parser.parse_known_args(args)
                # detect.cli.main: overrides may come before and after `train --resume`; nothing else is extra
                overrides = all("=" in e and not e.startswith("-") for e in extra)
                if extra and not (ns.verb == "train" and overrides):
                    parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:
        if exc.code:
            message = err.getvalue().strip()
            raise AssertionError(message.splitlines()[-1] if message else f"exit {exc.code}") from None


COMMANDS = documented_commands()


def test_the_docs_show_commands_of_both_clis():
    shown = {argv[0] for _, argv in COMMANDS}
    assert shown == set(CLIS)
    assert len(COMMANDS) >= 40, len(COMMANDS)


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_parses(where, argv):
    try:
        _parse(argv[0], argv[1:])
    except AssertionError as exc:
        pytest.fail(f"{where}: {shlex.join(argv)}\n  {exc}")


def test_a_wrong_command_is_refused():
    """The check can fail: an unknown flag, a missing required argument, a bad choice."""
    wrong = (("retail-data", ["convert", "labels/"]),
             ("retail-data", ["split", "d.pkl", "-o", "x", "--bogus"]),
             ("retail-detect", ["predict", "a.jpg"]),
             ("retail-detect", ["eval", "--weights", "w.pt", "--data", "d.pkl", "--tile", "sometimes"]),
             ("retail-detect", ["export", "--weights", "w.pt", "--format", "tflite"]),
             ("retail-detect", ["eval", "--weights", "w.pt", "--data", "d.pkl", "train.lr=0.1"]))
    for cli, args in wrong:
        with pytest.raises(AssertionError):
            _parse(cli, args)
    assert _argv("$ retail-detect audit ... --planogram bad.yaml ...", bash=False) is None
    argv = _argv("retail-data stats d.pkl --json  # a comment", bash=True)
    assert argv == ["retail-data", "stats", "d.pkl", "--json"]


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    """The anchors of every heading of ``doc`` outside code blocks (repeats get -1, -2, ...)."""
    inside, fence, seen, out = False, "", {}, set()
    for line in doc.read_text(encoding="utf-8").splitlines():
        m = FENCE.match(line)
        if m and (not inside or (m.group(2).startswith(fence[0]) and not m.group(3).strip())):
            inside, fence = (not inside), m.group(2)
            continue
        h = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not inside and h:
            slug = _slug(h.group(1))
            n = seen.get(slug, 0)
            out.add(slug if n == 0 else f"{slug}-{n}")
            seen[slug] = n + 1
    return out


def relative_links() -> list[tuple[str, str]]:
    """``[("FILE:LINE", target), ...]`` of every link but URLs, outside code blocks and code spans."""
    found = []
    for doc in DOCS:
        inside, fence = False, ""
        for no, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            m = FENCE.match(line)
            if m and (not inside or (m.group(2).startswith(fence[0]) and not m.group(3).strip())):
                inside, fence = (not inside), m.group(2)
                continue
            if inside:
                continue
            for target in LINK.findall(re.sub(r"`[^`]*`", "``", line)):
                if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                    found.append((f"{doc.relative_to(ROOT)}:{no}", target))
    return found


LINKS = relative_links()


def test_the_docs_link_to_each_other():
    assert len(LINKS) >= 20, len(LINKS)


@pytest.mark.parametrize(("where", "target"), LINKS, ids=[f"{w} {t}" for w, t in LINKS])
def test_relative_link_points_at_an_existing_file(where, target):
    doc = ROOT / where.rsplit(":", 1)[0]
    path, _, anchor = target.partition("#")
    dest = (doc.parent / path).resolve() if path else doc
    assert dest.exists(), f"{where}: {target} -> {dest} does not exist"
    assert ROOT in dest.parents or dest == ROOT, f"{where}: {target} leaves the repository"
    if anchor and dest.suffix == ".md":
        assert anchor in anchors(dest), f"{where}: {target}: no heading with anchor #{anchor} in {dest.name}"
