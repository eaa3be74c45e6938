"""Evaluation reports: matching detections to ground truth, count accuracy, and static HTML pages.

``write_report`` (:mod:`detect.report.build`) is the one entry; :mod:`detect.report.browse` builds the dataset page.
"""
