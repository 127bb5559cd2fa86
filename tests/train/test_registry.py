"""train/registry.py: the name tables the settings are validated against, and the encoder-name check."""

from __future__ import annotations

import pytest

from contrastive.train import augment, data, models, optim, registry
from contrastive.train.config import AugmentConfig, ConfigError, DataConfig, ModelConfig, OptimConfig


def test_the_implementation_modules_read_their_names_from_the_registry():
    assert data.DATASETS is registry.DATASETS
    assert augment.AUGMENTATIONS is registry.AUGMENTATIONS
    assert optim.OPTIMIZERS is registry.OPTIMIZERS and optim.SCHEDULES is registry.SCHEDULES
    assert models.ENCODERS is registry.ENCODERS and models.check_encoder_name is registry.check_encoder_name


@pytest.mark.parametrize(
    "section, key, names",
    [
        (DataConfig, "name", registry.DATASETS),
        (AugmentConfig, "kind", registry.AUGMENTATIONS),
        (OptimConfig, "name", registry.OPTIMIZERS),
        (OptimConfig, "schedule", registry.SCHEDULES),
        (ModelConfig, "encoder", registry.ENCODERS),
    ],
)
def test_config_accepts_every_registered_name_and_lists_them_for_another(section, key, names):
    for name in names:
        assert getattr(section(**{key: name}), key) == name
    with pytest.raises(ConfigError, match=names[-1]):
        section(**{key: "no_such_name"})


def test_check_encoder_name():
    registry.check_encoder_name("object:mypkg.Net")  # recorded for an encoder passed from Python
    with pytest.raises(TypeError, match="model.encoder must be a string"):
        registry.check_encoder_name(3)
    with pytest.raises(ValueError, match="python:package.module:factory"):
        registry.check_encoder_name("python:")
