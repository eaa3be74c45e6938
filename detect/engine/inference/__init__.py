"""Inference: the Predictor (sources, tiling) and the COCO evaluator."""
