"""Shelf audit: planogram compliance, out-of-stock gaps and share of shelf from detections.

- :mod:`data_tools.planogram`: load and validate a planogram file (YAML or JSON).
- :mod:`detect.audit.gaps`: empty horizontal space in a shelf row.
- :mod:`detect.audit.align`: edit-distance alignment of planned and detected facings (and of rows).
- :mod:`detect.audit.photo`: one photo's detections + its plan -> rows, statuses, gaps, share of shelf.
- :mod:`detect.audit.metrics`: audit results against a synthetic ``truth.json``.
- :mod:`detect.audit.report`, :mod:`detect.audit.draw`, :mod:`detect.audit.html`: outputs.
- :mod:`detect.audit.run`: the ``retail-detect audit`` verb.
"""
