"""Data pipeline: image reading, augmentation, the detection Dataset and its DataLoader."""

from detect.data.augment import Letterboxed, TrainPipeline, build_pipeline, letterbox, mosaic, val_pipeline
from detect.data.dataset import DetectionDataset
from detect.data.images import ImageError, read_image
from detect.data.loader import build_loader, collate

__all__ = [
    "DetectionDataset",
    "ImageError",
    "Letterboxed",
    "TrainPipeline",
    "build_loader",
    "build_pipeline",
    "collate",
    "letterbox",
    "mosaic",
    "read_image",
    "val_pipeline",
]
