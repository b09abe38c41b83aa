import pytest
import torch

from adapters.core import empty_weights
from adapters.core.empty import no_init
from adapters.demo import ToyConfig, ToyModel


def test_empty_weights_builds_on_meta_and_restores_init():
    original = torch.nn.init.normal_
    with empty_weights():
        model = ToyModel(ToyConfig())
        assert torch.nn.init.normal_ is not original
    assert torch.nn.init.normal_ is original
    assert all(p.device.type == "meta" for p in model.parameters())
    assert model.layers[0].attn.inv_freq.device.type == "cpu"  # buffers are real: the model computes them


def test_no_init_leaves_tensors_untouched_and_restores_on_error():
    original = torch.nn.init.kaiming_uniform_
    t = torch.full((3, 3), 7.0)
    with pytest.raises(RuntimeError, match="boom"):
        with no_init():
            assert torch.nn.init.kaiming_uniform_(t) is t
            raise RuntimeError("boom")
    assert torch.equal(t, torch.full((3, 3), 7.0))
    assert torch.nn.init.kaiming_uniform_ is original
