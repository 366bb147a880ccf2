"""DIAMOND checkpoint importer: round trip through DIAMOND's key layout, and one-line errors."""

from __future__ import annotations

import math

import pytest
import torch

from common.world_model import load_world_model
from diamond.convert import convert, export, main, read_diamond_state_dict, save_module_checkpoint, to_diamond
from diamond.module import DiamondModule

TINY = dict(
    num_actions=5,
    frame_size=16,
    cond_channels=16,
    depths=[1, 2],
    channels=[8, 16],
    attn_depths=[False, False],
    rew_lstm_dim=8,
    rew_cond_channels=8,
    rew_depths=[1, 1],
    rew_channels=[8, 8],
    rew_attn_depths=[False, False],
)


def random_module(**overrides) -> DiamondModule:
    torch.manual_seed(0)
    m = DiamondModule(**{**TINY, **overrides}).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # DIAMOND zero-inits output layers: randomise so outputs depend on every weight
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(max(1, p[0].numel())))
    return m


@torch.no_grad()
def outputs(m: DiamondModule) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    obs = torch.rand(2, 4, 3, 16, 16, generator=g) * 2 - 1
    act = torch.randint(0, 5, (2, 4), generator=g)
    x = torch.randn(2, 3, 16, 16, generator=g)
    sigma = torch.tensor([0.3, 2.0])
    d = m.denoiser.model_output(x, obs.flatten(1, 2), act, m.denoiser.conditioners(sigma))
    r = m.rew_end_model(obs[:, :-1], act[:, :-1], obs[:, 1:])
    return [d, r[0], r[1], *r[2]]


def diamond_file(tmp_path, module: DiamondModule, extra: dict | None = None):
    """Our weights in DIAMOND's layout, plus a DIAMOND agent (actor_critic.*) unless `extra` replaces it."""
    from diamond.actor_critic import ActorCritic

    sd = to_diamond(module.state_dict())
    agent = ActorCritic(3, module.hparams.frame_size, module.hparams.num_actions, 8, [4, 8], [1, 1])
    sd.update(extra if extra is not None else {f"actor_critic.{k}": v for k, v in agent.state_dict().items()})
    path = tmp_path / "agent.pt"
    torch.save(sd, path)
    return path, sd


def test_round_trip_ours_to_diamond_to_ours(tmp_path):
    m = random_module()
    ours = save_module_checkpoint(m, tmp_path / "ours.ckpt")
    back = export(ours, tmp_path / "diamond.pt")
    sd = torch.load(back, weights_only=True)
    assert all(k.startswith(("denoiser.", "rew_end_model.")) for k in sd)
    assert "denoiser.inner_model.noise_emb.weight" in sd  # the Fourier buffer travels with the weights
    again = convert(back, tmp_path / "again.ckpt", sigma_data=m.hparams.sigma_data)
    m2 = DiamondModule.load_from_checkpoint(again, weights_only=True).eval()
    for key in (
        "num_actions",
        "frame_size",
        "depths",
        "channels",
        "cond_channels",
        "rew_lstm_dim",
        "rew_channels",
    ):
        assert m2.hparams[key] == m.hparams[key], key
    for a, b in zip(outputs(m), outputs(m2)):
        assert torch.equal(a, b)
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k


def test_converted_checkpoint_plays_as_a_world_model(tmp_path):
    path, _ = diamond_file(tmp_path, random_module())
    out = convert(path, tmp_path / "w.ckpt")
    wm = load_world_model(out)
    assert wm.num_actions == 5 and wm.frame_shape == (16, 16, 3)
    wm.reset(torch.randint(0, 256, (1, 4, 16, 16, 3), dtype=torch.uint8), torch.zeros(1, 4, dtype=torch.long))
    assert wm.step(torch.tensor([4])).frames.shape == (1, 16, 16, 3)
    assert wm.policy.act(torch.zeros(1, 16, 16, 3, dtype=torch.uint8)).shape == (1,)  # the agent came along


def test_cli_writes_checkpoint(tmp_path, capsys):
    path, _ = diamond_file(tmp_path, random_module())
    main([str(path), str(tmp_path / "cli.ckpt"), "--num-steps-denoising", "5"])
    assert "wrote" in capsys.readouterr().out
    assert (
        DiamondModule.load_from_checkpoint(
            tmp_path / "cli.ckpt", weights_only=True
        ).hparams.num_steps_denoising
        == 5
    )


def test_error_not_a_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_diamond_state_dict(tmp_path / "missing.pt")


def test_error_not_a_state_dict(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a torch file")
    with pytest.raises(ValueError, match=r"junk\.pt: not a DIAMOND agent state dict"):
        read_diamond_state_dict(junk)
    lst = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], lst)
    with pytest.raises(ValueError, match=r"list\.pt: not a DIAMOND agent state dict"):
        read_diamond_state_dict(lst)
    other = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="unexpected key 'encoder.weight'"):
        read_diamond_state_dict(other)


def test_error_lightning_checkpoint_given(tmp_path):
    ours = save_module_checkpoint(random_module(), tmp_path / "ours.ckpt")
    with pytest.raises(ValueError, match="Lightning checkpoint, not a DIAMOND agent"):
        read_diamond_state_dict(ours)


def test_error_missing_key_is_named(tmp_path):
    m = random_module()
    sd = to_diamond(m.state_dict())
    del sd["denoiser.inner_model.cond_proj.2.bias"]
    path = tmp_path / "a.pt"
    torch.save(sd, path)
    with pytest.raises(ValueError, match="missing key 'denoiser.inner_model.cond_proj.2.bias'"):
        convert(path, tmp_path / "o.ckpt")
    with pytest.raises(SystemExit, match="error: .*missing key 'denoiser.inner_model.cond_proj.2.bias'"):
        main([str(path), str(tmp_path / "o.ckpt")])


def test_error_wrong_shape_is_named(tmp_path):
    sd = to_diamond(random_module().state_dict())
    key = "denoiser.inner_model.unet.d_blocks.0.resblocks.0.conv2.weight"
    sd[key] = torch.zeros(8, 8, 5, 5)
    path = tmp_path / "a.pt"
    torch.save(sd, path)
    with pytest.raises(ValueError, match=rf"key '{key}' has shape \(8, 8, 5, 5\), expected \(8, 8, 3, 3\)"):
        convert(path, tmp_path / "o.ckpt")
