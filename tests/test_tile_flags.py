"""--tile, --tile-size, --overlap on predict, eval and audit: parsed, passed on as TileOptions, bad values refused."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

import detect.verbs.evaluate_weights as evaluate_weights
import detect.verbs.predict_run as predict_run
from data_tools.errors import InvalidInput
from detect.cli import build_parser, main
from detect.engine.inference.evaluator import predict_dataset_tiled
from detect.engine.inference.predictor import Predictor
from detect.engine.inference.tiling import TileOptions
from tests.engine.test_tiling_seams import CountingBlobs


@pytest.mark.parametrize("verb, rest", [("predict", ["a.jpg"]), ("audit", ["a.jpg"]), ("eval", ["--data", "d.pkl"])])
def test_flags_parse(verb, rest):
    args = build_parser().parse_args([verb, "--weights", "w.pt", *rest, "--tile", "on", "--tile-size", "640",
                                      "--overlap", "0.3"])
    assert (args.tile, args.tile_size, args.overlap) == ("on", 640, 0.3)
    default = build_parser().parse_args([verb, "--weights", "w.pt", *rest])
    assert (default.tile, default.tile_size, default.overlap) == ("off" if verb == "eval" else "auto", None, 0.2)


class Stop(InvalidInput):
    pass


def test_predict_flags_reach_tile_options(tmp_path, monkeypatch):
    photo = tmp_path / "a.jpg"
    cv2.imwrite(str(photo), np.zeros((40, 60, 3), np.uint8))
    seen = {}

    def open_predictor(weights, **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(predict_run, "open_predictor", open_predictor)
    assert main(["predict", "--weights", "w.pt", str(photo), "--out", str(tmp_path / "out"), "--tile", "on",
                 "--tile-size", "640", "--overlap", "0.3"]) == 1  # stopped where the model would load
    assert seen["tile"] == TileOptions(mode="on", size=640, overlap=0.3)


def test_eval_flags_reach_evaluate_weights(monkeypatch):
    seen = {}
    monkeypatch.setattr(evaluate_weights, "evaluate_weights", lambda *a, **kw: seen.update(kw) or {})
    assert main(["eval", "--weights", "w.pt", "--data", "d.pkl", "--tile", "auto", "--tile-size", "500",
                 "--overlap", "0"]) == 0
    assert (seen["tile"], seen["tile_size"], seen["tile_overlap"]) == ("auto", 500, 0.0)


@pytest.mark.parametrize("flags, message", [
    (["--overlap", "1.5"], "error: --overlap must be in [0, 1), got 1.5"),
    (["--overlap", "-0.1"], "error: --overlap must be in [0, 1), got -0.1"),
    (["--overlap", "nan"], "error: --overlap must be in [0, 1), got nan"),
    (["--tile-size", "8"], "error: --tile-size must be a whole number of pixels >= 32, got 8"),
])
@pytest.mark.parametrize("verb", ["predict", "eval", "audit"])
def test_bad_values_refused_in_one_line(verb, flags, message, tmp_path, capsys):
    where = ["--data", str(tmp_path / "d.pkl")] if verb == "eval" else [str(tmp_path / "a.jpg")]
    code = main([verb, "--weights", str(tmp_path / "missing.pt"), *where, *flags])  # refused before any file is read
    err = capsys.readouterr().err
    assert code == 1 and err == message + "\n"


def test_eval_tiled_path_predicts_whole_photos(tmp_path):
    big = np.zeros((1500, 2000, 3), np.uint8)
    big[777:857, 1234:1294] = 255
    small = np.zeros((200, 300, 3), np.uint8)
    small[20:60, 10:50] = 255
    cv2.imwrite(str(tmp_path / "big.png"), big)
    cv2.imwrite(str(tmp_path / "small.png"), small)
    records = [SimpleNamespace(width=2000, height=1500), SimpleNamespace(width=600, height=400)]  # small: 2x
    ds = SimpleNamespace(rs=SimpleNamespace(records=records),
                         image_path=lambda i: str(tmp_path / ("big.png", "small.png")[i]))
    p = Predictor(CountingBlobs(), ["p"], 128, conf=0.5, tile=TileOptions(mode="on", size=400))
    results, tiled = predict_dataset_tiled(p, ds, chunk=1)
    assert tiled == 1 and [r["image_id"] for r in results] == [1, 2]
    # xywh in record pixels; a 400 px tile at S = 128 is 3.1 photo px per tensor px
    torch.testing.assert_close(torch.tensor(results[0]["bbox"]), torch.tensor([1234.0, 777.0, 60.0, 80.0]),
                               atol=4.0, rtol=0)
    torch.testing.assert_close(torch.tensor(results[1]["bbox"]), torch.tensor([20.0, 40.0, 80.0, 80.0]),
                               atol=5.0, rtol=0)
