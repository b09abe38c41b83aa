import pytest
import torch
from accelerate import init_empty_weights

from adapters.demo import ToyConfig, ToyModel, toy_foreign_state


@pytest.fixture
def toy_config() -> ToyConfig:
    return ToyConfig(layers=3)


@pytest.fixture
def toy_state(toy_config) -> dict[str, torch.Tensor]:
    return toy_foreign_state(toy_config, seed=1)


@pytest.fixture
def meta_toy(toy_config) -> ToyModel:
    with init_empty_weights():
        return ToyModel(toy_config)
