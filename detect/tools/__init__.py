"""The verbs that are tools around the library: ``bench`` (speed against torchvision's peers), ``compare``
(our detectors and the peers side by side at equal work), ``tune`` (grid search / k-fold), ``export``
(ONNX / TorchScript) and ``demo`` (synthetic shelves end to end). They use :mod:`detect.config`,
:mod:`detect.data`, :mod:`detect.models` and :mod:`detect.engine`; the library never imports them."""
