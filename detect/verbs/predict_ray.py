"""``predict --ray auto|ADDRESS``: the photos mapped over Ray Data workers, the lines written by the driver.

Ray (``pip install -e ".[ray]"``, an optional extra) is the distributed engine: the photos' paths become a
``ray.data`` dataset (``from_items``), ``map_batches`` runs :class:`PhotoActor` on ``--ray-workers`` actors
(each builds its predictor once, from the same weights and options) and the driver consumes the results in
order as they come (``iter_rows``, streaming, ``preserve_order``) and writes them through the same
:class:`~detect.verbs.predict_stream.LineWriter` as a local run, so the outputs are the same. The workers read
the photos and write the drawings by path: on several machines the photos and ``--out`` must be on a file
system they all see.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_tools.errors import CannotRun
from detect.data.proposals import ProposalsForFiles
from detect.engine.inference.predictor import Predictor
from detect.engine.inference.sources import Source, Sources
from detect.verbs.predict_photo import Line, PhotoWork
from detect.verbs.sku_stage import open_stage

RAY_MISSING = '--ray needs ray: pip install -e ".[ray]"'


def require_ray() -> None:
    """Refuse ``--ray`` in one line when ray (with Ray Data) is not installed."""
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.data") is None:
        raise CannotRun(RAY_MISSING)


class PhotoActor:
    """A Ray actor: one predictor (and gallery stage) built once, then batches of photos -> their lines.

    Args:
        predictor: keyword arguments of :meth:`Predictor.from_weights` (``weights`` included).
        work: keyword arguments of :class:`PhotoWork` besides ``detector_names``, ``stage`` and ``protected``.
        stage: ``(gallery, embedder, unknown_below, device)`` of :func:`open_stage`, or None.
        proposals: Fast R-CNN's external proposals file, or None.
    """

    def __init__(self, predictor: dict, work: dict, stage: tuple | None, proposals: str | None) -> None:
        self.predictor = Predictor.from_weights(**predictor)
        sku = open_stage(*stage) if stage is not None else None
        self.work_kwargs = work
        self.stage = sku
        self.proposals = ProposalsForFiles(proposals) if proposals is not None else None
        self.workers = work.get("workers", 2)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        files = [Source(Path(p), str(r), real=Path(x)) for p, r, x in zip(batch["path"], batch["rel"], batch["real"])]
        src = Sources(files=files)
        if self.proposals is not None:
            src.attach_proposals(self.proposals)
        work = PhotoWork(self.predictor.class_names, self.stage, protected={s.real for s in files},
                         **self.work_kwargs)
        keep = work.draw or self.stage is not None
        out = list(work.lines(self.predictor.iter_predictions(src, keep_images=keep, workers=self.workers)))
        return {"line": np.array([line for line, _ in out], dtype=object),
                "warning": np.array([w for _, w in out], dtype=object)}


def _init(address: str) -> bool:
    """Connect to (or start) Ray; True when this call started it (and so shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    if address != "auto":
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        return True
    try:  # a running cluster (ray start --head, RAY_ADDRESS), else a local Ray on this machine
        ray.init(address="auto", log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError:
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    return True


def _pool(ray, workers: int) -> dict:
    """``workers`` actors: ``compute=ActorPoolStrategy`` from Ray 2.51 (``concurrency`` is deprecated there),
    ``concurrency`` before (where ``compute`` was the deprecated one)."""
    major, minor = (int(x) for x in ray.__version__.split(".")[:2])
    if (major, minor) >= (2, 51):
        return {"compute": ray.data.ActorPoolStrategy(size=workers)}
    return {"concurrency": workers}


def ray_lines(address: str, workers: int, files: list[Source], actor: dict, batch_size: int) -> Iterator[Line]:
    """``(line, warning)`` of every photo of ``files``, in their order, predicted by ``workers`` Ray actors.

    ``actor``: the :class:`PhotoActor` arguments; ``batch_size``: photos per ``map_batches`` batch.
    """
    require_ray()
    import ray

    if workers < 1:
        raise CannotRun(f"--ray-workers must be at least 1, got {workers}")
    started = _init(address)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # lines in the photos' order, as on one machine
        if hasattr(ctx, "enable_progress_bars"):
            ctx.enable_progress_bars = False  # predict has its own
        items = [{"path": str(s.path), "rel": s.rel, "real": str(s.real or Path(s.path).resolve())} for s in files]
        if not items:
            return
        ds = ray.data.from_items(items).map_batches(
            PhotoActor, fn_constructor_kwargs=actor, batch_size=batch_size, num_cpus=1, batch_format="numpy",
            **_pool(ray, workers),
        )
        for row in ds.iter_rows():
            yield str(row["line"]), str(row["warning"])
    finally:
        if started:
            ray.shutdown()
