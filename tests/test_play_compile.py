"""compile=true: torch.compile of a world model's networks, falling back to eager with a warning."""

import pytest
import torch

from common.play.compile import compile_world_model
from tests.test_play_fakes import FakeWorldModel


def test_failure_restores_eager_modules_and_warns():
    model = FakeWorldModel()
    net = model.net

    def warmup():
        raise RuntimeError("no C++ compiler\\nmore lines")

    with pytest.warns(UserWarning, match="compile=true failed .*no C\\+\\+ compiler.*running eager"):
        assert compile_world_model(model, warmup) is False
    assert model.net is net


def test_nothing_to_compile_warns():
    model = FakeWorldModel()
    del model.net
    with pytest.warns(UserWarning, match="no network to compile"):
        assert compile_world_model(model, lambda: None) is False


def test_success_replaces_modules():
    model = FakeWorldModel()
    assert compile_world_model(model, lambda: None) is True
    assert isinstance(model.net, torch._dynamo.eval_frame.OptimizedModule)
