"""common.loader: a checkpoint is read once, memory-mapped, and becomes its family's WorldModel with the
saved weights; a family's world_model.py imports nothing from its module.py."""

from __future__ import annotations

import ast
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.tiny_families import Clips, diamond, genie, oasis

ROOT = Path(__file__).resolve().parents[1]


def write_checkpoint(module, path: Path) -> Path:
    """As Lightning writes one: weights, constructor arguments, worldplay's family/stage metadata."""
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": L.__version__}  # fmt: skip
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("family", ["genie", "diamond", "oasis"])
def test_world_model_py_imports_nothing_from_module_py(family):
    tree = ast.parse((ROOT / family / "world_model.py").read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert f"{family}.module" not in imported  # at the top or inside a function


@pytest.mark.parametrize("make", [diamond, oasis, genie], ids=["diamond", "oasis", "genie"])
def test_play_reads_a_checkpoint_once_memory_mapped(make, tmp_path, monkeypatch):
    from common.play.app import load

    torch.manual_seed(0)
    module = make().eval()
    path = write_checkpoint(module, tmp_path / "last.ckpt")
    calls, real_load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: calls.append(kw) or real_load(*a, **kw))
    world_model, ckpt, family = load(str(path), "cpu")
    assert family == module.family and ckpt["hyper_parameters"] == dict(module.hparams)
    assert len(calls) == 1 and calls[0]["mmap"] and calls[0]["weights_only"]
    # the same weights (no random initialisation left anywhere) and the same generated frames
    batch = Clips()[0]
    frames, actions = batch["frames"][None], batch["actions"][None]
    out = []
    for wm in (world_model, module.world_model()):
        wm.seed(3)
        wm.reset(frames[:, :4], actions[:, :4])
        out.append(wm.step(actions[:, 3]).frames)
    assert torch.equal(out[0], out[1])


def test_loaded_module_state_equals_the_saved_one(tmp_path):
    from common.loader import build_module, open_checkpoint

    torch.manual_seed(0)
    module = oasis()
    loaded = build_module(open_checkpoint(write_checkpoint(module, tmp_path / "o.ckpt")))
    assert type(loaded) is type(module) and not loaded.training
    saved = module.state_dict()
    assert loaded.state_dict().keys() == saved.keys()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, saved[key]), key
    for (name, buf), (_, ref) in zip(loaded.named_buffers(), module.named_buffers()):  # persistent or not
        assert torch.equal(buf, ref), name


def test_wrong_stage_and_family_are_one_line_errors(tmp_path):
    from common.loader import load_world_model
    from genie.module import GenieTokenizerModule
    from oasis.world_model import OasisWorldModel

    tokenizer = GenieTokenizerModule(frame_size=16, patch_size=4, d_model=16, num_heads=2, enc_layers=1,
                                     dec_layers=1, num_codes=16, code_dim=4)  # fmt: skip
    path = write_checkpoint(tokenizer, tmp_path / "tok.ckpt")
    with pytest.raises(
        ValueError, match=r"tok.ckpt: checkpoint of genie/tokenizer, expected genie/dynamics$"
    ):
        load_world_model(path)
    with pytest.raises(ValueError, match=r"checkpoint of genie/tokenizer, expected oasis$"):
        OasisWorldModel.from_checkpoint(path)
