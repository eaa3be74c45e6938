"""retail-detect data tools: VOC / COCO annotations -> validated records -> versioned dataset file."""

__version__ = "0.1.0"
