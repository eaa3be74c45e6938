"""``retail-detect gallery-bench``: how well a gallery names products it was never trained on (issue 24).

**Leave-classes-out.** The classes are split into *old* ones, enrolled first (all their reference crops, or
``old_shots``), *new* ones, enrolled afterwards from K reference crops each, and optionally *unknown* ones,
never enrolled. For each embedder and each K: top-1 of the old classes' query crops before the new ones are
enrolled, the enrolment (embed + :meth:`Gallery.add`, wall time on this machine), top-1 of every query crop of
the new classes, top-1 of the old classes afterwards, and a check that nothing enrolled before changed
(the old references' ids and vectors bit-identical, and no old query answered differently except by a new
SKU). References and queries never come from the same photo.

**Open set.** Precision and recall of ``unknown`` (similarity below the gallery's own threshold,
:attr:`Gallery.threshold`) on the crops of classes that are not enrolled, against the enrolled classes' crops:
before enrolment on the new classes, and after it on the unknown ones.

**Speed.** ms per crop to embed (batched, on this CPU), and per query crop to search galleries of random unit
vectors of several sizes (:mod:`detect.tools.gallery_bench_speed`).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from data_tools.atomic import atomic_write_text
from data_tools.errors import InvalidInput
from data_tools.outputs import check_output
from detect.engine.inference.crop_embedder import CropEmbedder
from detect.engine.inference.gallery import Gallery, NewReference
from detect.engine.inference.gallery_search import VectorIndex
from detect.tools.gallery_bench_data import Crops, choose_classes, load_refs_and_queries, pick, refuse_seen
from detect.tools.gallery_bench_report import format_tables, machine, result_json
from detect.tools.gallery_bench_speed import embed_timed, search_speed


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def parse_shots(text: str) -> list[int]:
    """``"1,5,10"`` -> ``[1, 5, 10]`` (positive, sorted, unique)."""
    try:
        shots = sorted({int(s) for s in str(text).split(",") if s.strip()})
    except ValueError:
        raise InvalidInput(f"--shots: give whole numbers like 1,5,10, not {text!r}") from None
    if not shots or shots[0] < 1:
        raise InvalidInput(f"--shots: give whole numbers of at least 1 like 1,5,10, not {text!r}")
    return shots


def top1(gallery: Gallery, vectors: np.ndarray, names: np.ndarray) -> tuple[float | None, list[str | None]]:
    """``(fraction of queries whose best SKU is their class, the answers)``; None for no query."""
    answers = [m.sku for m in gallery.search(vectors, top=1)] if len(vectors) else []
    return (float(np.mean([a == n for a, n in zip(answers, names)])) if answers else None), answers


def open_set(gallery: Gallery, vectors: np.ndarray, names: np.ndarray, unknown: Sequence[str]) -> dict:
    """Precision and recall of ``unknown`` (best similarity below :attr:`Gallery.threshold`) on the crops of the
    classes ``unknown`` against the others (which the gallery holds), and how many of those are named right."""
    is_unknown = np.isin(names, list(unknown))
    out = {"threshold": gallery.threshold, "unknown_crops": int(is_unknown.sum()), "known_crops": int((~is_unknown).sum())}
    if gallery.threshold is None or not is_unknown.any() or not len(vectors):
        return out | {"precision": None, "recall": None, "known_named_right": None,
                      "note": "no threshold (every SKU has one reference)" if gallery.threshold is None else "no crops"}
    matches = gallery.search(vectors, top=1)
    said = np.array([m.similarity < gallery.threshold for m in matches], bool)
    tp = int((said & is_unknown).sum())
    right = np.array([not s and m.sku == n for s, m, n in zip(said, matches, names)], bool)
    return out | {"precision": tp / int(said.sum()) if said.any() else None, "recall": tp / int(is_unknown.sum()),
                  "known_named_right": float(right[~is_unknown].mean()) if (~is_unknown).any() else None}


def _entries(crops: Crops, chosen: dict[str, list[int]], vectors: np.ndarray, rows: dict[int, int]) -> dict:
    return {sku: [NewReference(crops.crops[i], vectors[rows[i]], f"{crops.photos[i]}#{i}") for i in idx]
            for sku, idx in chosen.items() if idx}


def _enrol(folder: Path, embedder, refs: Crops, chosen: dict[str, list[int]]) -> tuple[Gallery, float]:
    """Embed the chosen reference crops and add them to the gallery in ``folder`` in one commit: ``(gallery,
    wall seconds)``."""
    order = [i for idx in chosen.values() for i in idx]
    start = time.perf_counter()
    gallery = Gallery.open(folder) if (folder / "manifest.json").is_file() else Gallery.create(folder, embedder.identity())
    vectors = embedder.embed([refs.crops[i] for i in order])
    gallery.add(_entries(refs, chosen, vectors, {i: r for r, i in enumerate(order)}))
    return gallery, time.perf_counter() - start


def _unchanged(before: Gallery, after: Gallery, old_answers: list, new_answers: list, new: Sequence[str],
               old_queries: np.ndarray) -> dict:
    """Did enrolment leave everything enrolled before as it was? ``old_answers_among_old``: the old queries
    (``[M, dim]``) answered among the enrolled gallery's old rows only, the same as before when nothing changed."""
    rows = {r.id: i for i, r in enumerate(after.refs)}
    kept = [i for i, r in enumerate(after.refs) if r.sku not in set(new)]
    among_old = [m.sku for m in VectorIndex(after.vectors[kept], [after.refs[i].sku for i in kept]).classify(old_queries, 1)]
    same_refs = all(r.id in rows and after.refs[rows[r.id]] == r for r in before.refs)
    same_vectors = same_refs and np.array_equal(after.vectors[[rows[r.id] for r in before.refs]], before.vectors)
    moved = [(a, b) for a, b in zip(old_answers, new_answers) if a != b]
    return {"refs_identical": bool(same_refs and same_vectors), "answers_among_old_identical": among_old == old_answers,
            "answers_changed": len(moved),
            "answers_changed_to_new": sum(b in set(new) for _, b in moved),
            "ok": bool(same_refs and same_vectors and among_old == old_answers and all(b in set(new) for _, b in moved))}


def bench_embedder(embedder, refs: Crops, queries: Crops, classes: tuple[list, list, list], shots: list[int],
                   old_shots: int | str | None, seed: int, work: Path, log: Callable[[str], None]) -> dict:
    """Every measurement of one embedder (see the module doc); ``work``: a scratch folder for its galleries.
    ``old_shots``: the old classes' reference crops each (None: all; ``"same"``: K at each K)."""
    old, new, unknown = classes
    q_idx = queries.of([*old, *new, *unknown])
    q = queries.take(q_idx)
    log(f"[{embedder.name}] embedding {len(q)} query crops")
    q_vec, embed_speed = embed_timed(embedder, q.crops)
    is_old, is_new = np.isin(q.names, old), np.isin(q.names, new)
    bases: dict = {}

    def base_for(k_old: int | None) -> tuple[Gallery, float | None, list, float]:
        """The gallery of the old classes from ``k_old`` crops each (None: all): ``(gallery, old top-1, the old
        queries' answers, enrolment seconds)``, made once per ``k_old``."""
        if k_old not in bases:
            chosen_old = pick(refs, old, k_old, seed)
            log(f"[{embedder.name}] enrolling {len(old)} old classes ({sum(map(len, chosen_old.values()))} references)")
            base, seconds = _enrol(work / f"old{k_old}", embedder, refs, chosen_old)
            before, answers = top1(base, q_vec[is_old], q.names[is_old])
            log(f"[{embedder.name}] old classes top-1 {before:.3f} on {int(is_old.sum())} crops; "
                f"threshold {base.threshold}")
            bases[k_old] = (base, before, answers, seconds)
        return bases[k_old]

    same = old_shots == "same"
    base, old_before, old_answers, old_seconds = base_for(shots[0] if same else old_shots)
    run = {"embedder": embedder.name, "identity": embedder.identity(), "trained_on": len(embedder.class_names),
           "embed": embed_speed, "old": {"classes": len(old), "refs": len(base.refs), "queries": int(is_old.sum()),
                                         "top1": old_before, "enrol_seconds": round(old_seconds, 3),
                                         "chance": 1 / len(old)},
           "open_set_before": open_set(base, q_vec[is_old | is_new], q.names[is_old | is_new], new), "shots": []}
    for k in shots:
        k_old = k if same else old_shots
        base, old_before, old_answers, _ = base_for(k_old)
        folder = work / f"k{k}"
        shutil.copytree(base.folder, folder)
        chosen = pick(refs, new, k, seed)
        gallery, seconds = _enrol(folder, embedder, refs, chosen)
        new_top1, _ = top1(gallery, q_vec[is_new], q.names[is_new])
        old_after, after_answers = top1(gallery, q_vec[is_old], q.names[is_old])
        n_refs = sum(map(len, chosen.values()))
        row = {"k": k, "new_classes": len(new), "new_refs": n_refs,
               "new_short": sum(len(v) < k for v in chosen.values()), "new_queries": int(is_new.sum()),
               "old_refs": len(base.refs), "new_top1": new_top1, "old_top1_before": old_before, "old_top1_after": old_after,
               "unchanged": _unchanged(base, gallery, old_answers, after_answers, new, q_vec[is_old]),
               "gallery_skus": len(gallery.skus), "gallery_refs": len(gallery.refs),
               "chance": 1 / len(gallery.skus), "enrol_seconds": round(seconds, 3),
               "enrol_seconds_per_sku": round(seconds / max(1, len(new)), 4), "threshold": gallery.threshold}
        if unknown:
            row["open_set"] = open_set(gallery, q_vec, q.names, unknown)
        run["shots"].append(row)
        log(f"[{embedder.name}] K={k}: new top-1 {new_top1 if new_top1 is None else round(new_top1, 3)} "
            f"({int(is_new.sum())} crops), old {old_before:.3f} -> {old_after:.3f}, unchanged "
            f"{row['unchanged']['ok']}, enrolment {seconds:.2f} s for {len(new)} SKUs x {k}")
        shutil.rmtree(folder, ignore_errors=True)
    return run


def run_gallery_bench(data: str, embedders: Sequence[str | object], queries: str | None = None,
                      query_fraction: float = 0.3, new_classes: str | None = None, new_fraction: float = 0.5,
                      unknown_fraction: float = 0.0, shots: Sequence[int] = (1, 5, 10),
                      old_shots: int | str | None = None,
                      queries_per_class: int | None = None,
                      seed: int = 0, image_size: int | None = None, batch: int = 64,
                      search_sizes: Sequence[int] = (1000, 100_000), json_out: str | None = None,
                      log: Callable[[str], None] = _stderr) -> dict:
    """Run the benchmark; returns the result dict (and writes it to ``json_out``, checked before any work).

    Args:
        data: the reference crops: class folders or any dataset ``load_any`` reads (boxes are crops).
        embedders: ``imagenet`` or embedder checkpoints (or objects with ``embed``, ``identity``, ``name`` and
            ``class_names``, for tests).
        queries: the query crops (another split); None: ``query_fraction`` of ``data``'s photos.
        new_classes, new_fraction, unknown_fraction, seed: the class split (:func:`choose_classes`).
        shots: the K of the new classes' enrolment; ``old_shots``: the old classes' (None: all; ``"same"``: K
            at each K, every SKU with as many references).
        queries_per_class: at most this many query crops per class (seeded; None: all).
        image_size: the imagenet embedder's input side (default 128); ``batch``: crops per forward pass.
        search_sizes: gallery sizes (random unit vectors) of the search timing; empty: none.
    """
    if json_out is not None:
        check_output(json_out, "gallery-bench", [data, queries, *[e for e in embedders if isinstance(e, str)]],
                     flag="--json")
    started = machine()
    specs = list(embedders)
    if not specs:
        raise InvalidInput("--embedder: give at least one (imagenet or an embedder checkpoint)")
    sizes = [e.settings.image_size for e in specs if not isinstance(e, str)] + [image_size or 128]
    refs, qs = load_refs_and_queries(data, queries, query_fraction, seed, max(192, max(sizes)), log)
    classes = choose_classes(sorted(set(refs.names), key=list(dict.fromkeys(refs.names)).index), new_classes,
                             new_fraction, unknown_fraction, seed, data)
    old, new, unknown = classes
    if queries_per_class is not None:
        qs = qs.take(sorted(i for idx in pick(qs, sorted(set(qs.names)), queries_per_class, seed + 1).values()
                            for i in idx))
        log(f"queries: at most {queries_per_class} per class: {len(qs)} crops")
    log(f"classes: {len(old)} old, {len(new)} new ({', '.join(new[:4])}{', ...' if len(new) > 4 else ''})"
        + (f", {len(unknown)} never enrolled" if unknown else ""))
    loaded = []
    for spec in specs:
        emb = CropEmbedder.load(spec, device="cpu", batch_size=batch, image_size=image_size) if isinstance(spec, str) \
            else spec
        refuse_seen(emb.name, emb.class_names, [*new, *unknown])
        loaded.append(emb)
    runs = []
    with tempfile.TemporaryDirectory(prefix="gallery-bench-") as tmp:
        for i, emb in enumerate(loaded):
            work = Path(tmp) / f"e{i}"
            work.mkdir()
            runs.append(bench_embedder(emb, refs, qs, classes, list(shots), old_shots, seed, work, log))
            shutil.rmtree(work, ignore_errors=True)
    speed = search_speed(list(search_sizes), loaded[0].identity()["dim"] if loaded else 128, seed, log)
    result = result_json(started, {"data": data, "queries": queries, "query_fraction": None if queries else query_fraction,
                                   "seed": seed, "shots": list(shots), "old_shots": old_shots,
                                   "queries_per_class": queries_per_class, "old_classes": old,
                                   "new_classes": new, "unknown_classes": unknown,
                                   "reference_crops": len(refs), "query_crops": len(qs)}, runs, speed)
    if json_out is not None:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        import json

        atomic_write_text(json_out, json.dumps(result, indent=1))
    return result


__all__ = ["run_gallery_bench", "parse_shots", "format_tables"]
