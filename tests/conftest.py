import pytest
import torch

from adapters.core import empty_weights
from adapters.demo import ToyConfig, ToyModel, toy_foreign_state


@pytest.fixture
def toy_config() -> ToyConfig:
    return ToyConfig(layers=3)


@pytest.fixture
def toy_state(toy_config) -> dict[str, torch.Tensor]:
    return toy_foreign_state(toy_config, seed=1)


@pytest.fixture
def meta_toy(toy_config) -> ToyModel:
    with empty_weights():
        return ToyModel(toy_config)
