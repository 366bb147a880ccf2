"""compile=true: torch.compile of a world model's networks and blocks, falling back to eager with a warning."""

import pytest
from torch import nn

from common.play.compile import compile_targets, compile_world_model
from tests.test_play_fakes import FakeWorldModel


class Blocky(FakeWorldModel):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
        self.other = nn.ModuleDict({"blocks": nn.ModuleList([nn.Linear(3, 3)])})


def test_targets_are_networks_and_repeated_blocks():
    model = Blocky()
    targets = compile_targets(model)
    assert model.net in targets and model.net[0] in targets and model.other["blocks"][0] in targets
    assert len(targets) == len({id(t) for t in targets})


def test_failure_restores_eager_forward_and_warns():
    model = Blocky()

    def warmup():
        raise RuntimeError("no C++ compiler")

    with pytest.warns(UserWarning, match=r"compile=true failed .*no C\+\+ compiler.*running eager"):
        assert compile_world_model(model, warmup) is False
    assert "forward" not in vars(model.net) and "forward" not in vars(model.net[0])


def test_nothing_to_compile_warns():
    model = FakeWorldModel()
    del model.net
    with pytest.warns(UserWarning, match="no network to compile"):
        assert compile_world_model(model, lambda: None) is False


def test_success_compiles_each_target_in_place():
    model = Blocky()
    net = model.net
    assert compile_world_model(model, lambda: None) is True  # nothing is run: compiling happens lazily
    assert model.net is net and all("forward" in vars(m) for m in compile_targets(model))
