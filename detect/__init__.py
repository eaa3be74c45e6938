"""retail-detect: detectors, trainer, evaluator and predictor for retail product photos."""

__version__ = "0.1.0"
