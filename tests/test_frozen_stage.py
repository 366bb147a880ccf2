"""common/frozen_stage.py: a later stage builds the frozen earlier stage's network from its checkpoint."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from common.frozen_stage import frozen_stage, stage_weights


class Net(nn.Module):
    def __init__(self, width: int, sizes: list[int]):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.drop = nn.Dropout(0.5)
        self.sizes = sizes


@pytest.fixture
def enc_ckpt(tmp_path):
    path = tmp_path / "enc.ckpt"
    torch.manual_seed(0)
    weights = {f"enc.{k}": v for k, v in Net(3, [1]).state_dict().items()}
    torch.save(
        {
            "worldplay": {"family": "fake", "stage": "enc"},
            "hyper_parameters": {"width": 3, "sizes": (4, 5), "lr": 0.1},
            "state_dict": {**weights, "head.weight": torch.ones(1)},
        },
        path,
    )
    return path, weights


def arguments_of(h):
    return {"width": h["width"], "sizes": h["sizes"]}


def test_stage_weights_strips_the_stage_prefix(enc_ckpt):
    path, weights = enc_ckpt
    hparams, state = stage_weights(path, "fake", "enc")
    assert hparams == {"width": 3, "sizes": (4, 5), "lr": 0.1}
    assert sorted(state) == ["fc.bias", "fc.weight"]
    assert torch.equal(state["fc.weight"], weights["enc.fc.weight"])


def test_first_build_reads_arguments_and_weights_and_freezes(enc_ckpt):
    path, weights = enc_ckpt
    net, arguments = frozen_stage(Net, None, path, "fake", "enc", arguments_of)
    assert arguments == {"width": 3, "sizes": [4, 5]} and type(arguments["sizes"]) is list  # plain
    assert torch.equal(net.fc.weight, weights["enc.fc.weight"]) and torch.equal(
        net.fc.bias, weights["enc.fc.bias"]
    )
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    x = torch.ones(2, 3)
    assert torch.equal(net.drop(x), x)  # eval: dropout off


def test_rebuild_from_saved_arguments_needs_no_checkpoint(enc_ckpt):
    torch.manual_seed(1)
    net, arguments = frozen_stage(Net, {"width": 3, "sizes": (4, 5)}, None, "fake", "enc", arguments_of)
    assert arguments == {"width": 3, "sizes": [4, 5]} and net.sizes == [4, 5]
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert not torch.equal(net.fc.weight, enc_ckpt[1]["enc.fc.weight"])  # weights come later (Lightning)


def test_one_line_errors_name_the_file_and_what_is_wrong(enc_ckpt, tmp_path):
    path, _ = enc_ckpt
    with pytest.raises(ValueError, match=r"^enc_ckpt is null: give the path of a checkpoint of fake/enc$"):
        frozen_stage(Net, None, None, "fake", "enc", arguments_of)
    with pytest.raises(ValueError, match=r"enc\.ckpt: checkpoint of fake/enc, expected oasis/vae$"):
        stage_weights(path, "oasis", "vae")
    with pytest.raises(ValueError, match=r"enc\.ckpt: checkpoint of fake/enc, expected fake/dec$"):
        frozen_stage(Net, None, path, "fake", "dec", arguments_of)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        frozen_stage(Net, None, tmp_path / "missing.ckpt", "fake", "enc", arguments_of)
    torch.save({"worldplay": {"family": "fake", "stage": "enc"}, "state_dict": {"x.w": torch.ones(1)}}, path)
    with pytest.raises(ValueError, match=r"enc\.ckpt: no weights under 'enc\.' in this fake/enc checkpoint$"):
        stage_weights(path, "fake", "enc")
