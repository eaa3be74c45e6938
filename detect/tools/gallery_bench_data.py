"""The crops and classes of ``retail-detect gallery-bench``: references and queries from different photos,
the classes split into old (enrolled first), new (enrolled from K crops) and unknown (never enrolled), and the
refusal of an embedder that was trained on a class it is to be measured on as unseen.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from data_tools.errors import InvalidInput
from detect.data.crops import CropSet, load_crops, read_class_list
from detect.engine.inference.crop_embedder import crop_boxes


@dataclass
class Crops:
    """Product crops with their class name and photo.

    Attributes:
        crops: ``[h, w, 3]`` uint8 RGB, the product's box only.
        names: the class name of each crop.
        photos: the photo each crop was cut from.
    """

    crops: list[np.ndarray]
    names: np.ndarray
    photos: list[str]

    def __len__(self) -> int:
        return len(self.crops)

    def take(self, idx: Sequence[int]) -> Crops:
        idx = [int(i) for i in idx]
        return Crops([self.crops[i] for i in idx], self.names[idx] if idx else self.names[:0],
                     [self.photos[i] for i in idx])

    def of(self, classes: Sequence[str]) -> np.ndarray:
        """Indices of the crops of ``classes``: int64 ``[n]``."""
        return np.flatnonzero(np.isin(self.names, list(classes)))


def from_cropset(cs: CropSet) -> Crops:
    """The product box of each of ``cs``'s context crops (the whole photo for class folders)."""
    crops = [crop_boxes(img, box[None])[0] for img, box in zip(cs.images, cs.boxes)]
    names = np.asarray([cs.class_names[k] for k in cs.labels], dtype=object)
    return Crops(crops, names, [os.path.realpath(s) for s in cs.sources])


def split_photos(crops: Crops, fraction: float, seed: int) -> tuple[Crops, Crops]:
    """``(references, queries)``: ``fraction`` of each class's photos (by the class of a photo's first crop; at
    least one photo of a class with two or more) give the queries; no photo gives both."""
    if not 0 < fraction < 1:
        raise InvalidInput(f"--query-fraction must be between 0 and 1, not {fraction}")
    rng = np.random.default_rng(seed)
    first: dict[str, str] = {}
    for photo, name in zip(crops.photos, crops.names):
        first.setdefault(photo, str(name))
    by_class: dict[str, list[str]] = {}
    for photo, name in first.items():
        by_class.setdefault(name, []).append(photo)
    query_photos: set[str] = set()
    for name in sorted(by_class):
        photos = sorted(by_class[name])
        n = min(len(photos) - 1, max(1, round(fraction * len(photos))))
        query_photos.update(rng.permutation(photos)[:n].tolist())
    is_query = np.array([p in query_photos for p in crops.photos], bool)
    return crops.take(np.flatnonzero(~is_query)), crops.take(np.flatnonzero(is_query))


def load_refs_and_queries(data: str, queries: str | None, fraction: float, seed: int, max_side: int,
                          log: Callable[[str], None]) -> tuple[Crops, Crops]:
    """The reference and query crops: ``queries`` read apart (its classes that ``data`` lacks are left out), or
    ``data``'s photos split by :func:`split_photos`.

    Raises:
        InvalidInput: a photo both in ``data`` and ``queries``, or no query crop of a class of ``data``.
    """
    refs = from_cropset(load_crops(data, max_side=max_side, log=log))
    log(f"{data}: {len(refs)} crops of {len(set(refs.names))} classes from {len(set(refs.photos))} photos")
    if queries is None:
        refs, qs = split_photos(refs, fraction, seed)
        log(f"queries: {len(qs)} crops from {len(set(qs.photos))} of its photos ({fraction:g} of each class's "
            f"photos, seed {seed}); references: the other {len(set(refs.photos))} photos")
    else:
        qs = from_cropset(load_crops(queries, max_side=max_side, log=log))
        shared = sorted(set(qs.photos) & set(refs.photos))
        if shared:
            raise InvalidInput(f"{queries}: {len(shared)} photos are also in {data} (e.g. {shared[0]}); references and "
                               "queries must come from different photos")
        extra = sorted(set(qs.names) - set(refs.names))
        if extra:
            log(f"note: {queries}: {len(extra)} classes that {data} lacks are left out ({', '.join(extra[:3])}"
                + (", ..." if len(extra) > 3 else "") + ")")
            qs = qs.take(qs.of(sorted(set(refs.names))))
        log(f"{queries}: {len(qs)} query crops from {len(set(qs.photos))} photos")
    if not len(qs):
        raise InvalidInput(f"{queries or data}: no query crop of the classes of {data}")
    return refs, qs


def choose_classes(names: Sequence[str], new_classes: str | None, new_fraction: float, unknown_fraction: float,
                   seed: int, where: str) -> tuple[list[str], list[str], list[str]]:
    """``(old, new, unknown)`` class lists (each in ``names``' order).

    ``new_classes`` (comma list or file; else ``new_fraction`` of the classes drawn with ``seed``) are enrolled
    from K crops; ``unknown_fraction`` of the classes (drawn from the rest) are never enrolled; the old ones
    are enrolled first.
    """
    names = list(names)
    rng = np.random.default_rng(seed)
    if new_classes:
        new = read_class_list(new_classes)
        missing = [n for n in new if n not in names]
        if missing:
            raise InvalidInput(f"--new-classes: no class {missing[0]!r} in {where} (it has {len(names)} classes: "
                               f"{', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    else:
        if not 0 < new_fraction < 1:
            raise InvalidInput(f"--new-fraction must be between 0 and 1, not {new_fraction}")
        new = rng.permutation(names)[:max(1, round(new_fraction * len(names)))].tolist()
    if not 0 <= unknown_fraction < 1:
        raise InvalidInput(f"--unknown-fraction must be in [0, 1), not {unknown_fraction}")
    rest = [n for n in names if n not in new]
    unknown = rng.permutation(rest)[:round(unknown_fraction * len(names))].tolist() if unknown_fraction else []
    old = [n for n in rest if n not in unknown]
    if not old:
        raise InvalidInput(f"{where}: no old class left to enrol first ({len(names)} classes, {len(new)} new, "
                           f"{len(unknown)} unknown)")
    order = {n: i for i, n in enumerate(names)}
    return old, sorted(set(new), key=order.get), sorted(unknown, key=order.get)


def refuse_seen(embedder_name: str, trained_on: Sequence[str], unseen: Sequence[str]) -> None:
    """Leave-classes-out: refuse an embedder trained on any class it is measured on as new or unknown."""
    seen = [n for n in unseen if n in set(trained_on)]
    if seen:
        raise InvalidInput(f"{embedder_name}: trained on {len(seen)} of the new/unknown classes ({', '.join(seen[:3])}"
                           f"{', ...' if len(seen) > 3 else ''}); leave-classes-out needs an embedder that never saw "
                           "them: train it on the old classes only")


def pick(crops: Crops, classes: Sequence[str], k: int | None, seed: int) -> dict[str, list[int]]:
    """Per class the indices of ``k`` of its crops (all when ``k`` is None), the same seeded order for every
    ``k`` (so the 1 crop is among the 5, the 5 among the 10)."""
    out = {}
    for j, name in enumerate(classes):
        idx = np.flatnonzero(crops.names == name)
        order = np.random.default_rng([seed, j]).permutation(idx)
        out[name] = sorted(order[:k].tolist()) if k is not None else idx.tolist()
    return out
