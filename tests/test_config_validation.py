"""Recipe values are checked at load time, naming the key: numbers, ranges, enumerations."""

from __future__ import annotations

import pytest

from detect.config import ConfigError, config_from_dict, load_config


def test_yaml_1_1_exponents_read_as_numbers(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  lr: 1e-3\n  weight_decay: 5E-4\n")
    cfg = load_config(recipe, ["train.ema_decay=9.99e-1"])
    assert cfg.train.lr == 1e-3 and cfg.train.weight_decay == 5e-4 and cfg.train.ema_decay == 0.999
    assert config_from_dict({}, ["train.epochs=1e1"]).train.epochs == 10


@pytest.mark.parametrize("override, message", [
    ("train.epochs=-1", "train.epochs: must be >= 0, got -1"),
    ("data.image_size=0", "data.image_size: must be >= 32, got 0"),
    ("data.workers=-3", "data.workers: must be >= 0"),
    ("train.lr=.nan", "train.lr: expected a finite number"),
    ("train.batch_size=0", "train.batch_size: must be >= 1"),
    ("train.save_period=-1", "train.save_period: must be >= 0, got -1"),
    ("augment.hflip=1.5", "augment.hflip: must be a probability in [0, 1]"),
    ("model.score_thresh=2", "model.score_thresh: must be in [0, 1]"),
    ("train.scheduler=cosin", "train.scheduler: 'cosin' is not one of cosine, step, plateau, none"),
    ("train.optimizer=rmsprop", "train.optimizer: 'rmsprop' is not one of sgd, adam, adamw"),
    ("model.name=retinanet", "model.name: 'retinanet' is not one of ssd, fast_rcnn, yolo"),
    ("augment.scale=[1.2, 0.8]", "augment.scale: must be [low, high]"),
    ("model.fast_rcnn.head_init=xavier", "model.fast_rcnn.head_init: 'xavier' is not one of normal, pytorch"),
    ("model.fast_rcnn.fpn_init=he", "model.fast_rcnn.fpn_init: 'he' is not one of pytorch, kaiming_a1"),
    ("model.fast_rcnn.roi_box_beta=-0.1", "model.fast_rcnn.roi_box_beta: must be >= 0"),
])
def test_out_of_range_and_unknown_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict({}, [override])
    assert message in str(err.value)


def test_data_proposals_replace_the_rpn_and_only_fast_rcnn_takes_them():
    from detect.config import ConfigError, config_from_dict
    from detect.models.build import build_model

    cfg = config_from_dict({"model": {"name": "fast_rcnn", "backbone_weights": "none"}}, ["data.proposals=p.json"])
    assert cfg.model.fast_rcnn.rpn is False
    model = build_model(cfg.model, 2)
    assert model.rpn is None and model.needs_proposals
    with pytest.raises(ConfigError, match="data.proposals: model.name=ssd has no use for external proposals"):
        config_from_dict({"model": {"name": "ssd"}}, ["data.proposals=p.json"])


def test_moved_keys_still_load_from_old_recipes_and_checkpoints():
    from detect.config import config_from_dict

    old = config_from_dict({"model": {"name": "fast_rcnn", "fast_rcnn": {"proposals": None, "head_dim": 256}}})
    assert old.data.proposals is None and old.model.fast_rcnn.rpn and old.model.fast_rcnn.head_dim == 256
    moved = config_from_dict({"model": {"name": "fast_rcnn"}}, ["model.fast_rcnn.proposals=p.json"])
    assert moved.data.proposals == "p.json" and moved.model.fast_rcnn.rpn is False


def test_each_head_section_is_reachable_assignable_and_round_trips():
    from detect.config import config_from_dict
    from detect.models.build import DETECTORS

    cfg = config_from_dict({"model": {"name": "fast_rcnn", "fast_rcnn": {"head_dim": 256}}})
    assert list(cfg.model.heads) == list(DETECTORS)  # every registered head, in the registry's order
    assert all(type(getattr(cfg.model, name)) is spec.options for name, spec in DETECTORS.items())
    cfg.model.fast_rcnn = DETECTORS["fast_rcnn"].options(head_dim=64)  # lands in the model's head options
    assert cfg.to_dict()["model"]["fast_rcnn"]["head_dim"] == 64 and "heads" not in cfg.to_dict()["model"]
    assert config_from_dict(cfg.to_dict()) == cfg
    with pytest.raises(AttributeError, match="no 'fast_rcnnn'"):
        cfg.model.fast_rcnnn  # noqa: B018
