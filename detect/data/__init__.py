"""Data pipeline: augmentation, the detection Dataset and its DataLoader (images are decoded by
:func:`data_tools.images.read_image`)."""

from detect.data.augment import Letterboxed, TrainPipeline, build_pipeline, letterbox, mosaic, val_pipeline
from detect.data.dataset import DetectionDataset
from detect.data.loader import build_loader, collate

__all__ = [
    "DetectionDataset",
    "Letterboxed",
    "TrainPipeline",
    "build_loader",
    "build_pipeline",
    "collate",
    "letterbox",
    "mosaic",
    "val_pipeline",
]
