"""python -m oasis.convert: open-oasis safetensors -> worldplay dit checkpoint (round trip, fixture, errors)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file, save_model

from common.checkpoint import read_meta
from common.world_model import load_world_model
from oasis.convert import main
from oasis.dit import DiT
from oasis.vae import AutoencoderKL

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "oasis"


@pytest.fixture
def weights(tmp_path):
    """A small DiT + VAE saved the way open-oasis files are (safetensors save_model drops rotary aliases)."""
    torch.manual_seed(0)
    vae = AutoencoderKL(latent_dim=8, input_height=32, input_width=48, patch_size=8, enc_dim=32, enc_depth=1,
                        enc_heads=2, dec_dim=48, dec_depth=2, dec_heads=2)  # fmt: skip
    dit = DiT(input_h=4, input_w=6, patch_size=2, in_channels=8, hidden_size=32, depth=3, num_heads=2,
              external_cond_dim=25, max_frames=8)  # fmt: skip
    for p in dit.parameters():
        if p.requires_grad:
            p.data.normal_(0, 0.1)
    save_model(dit, str(tmp_path / "dit.safetensors"))
    save_model(vae, str(tmp_path / "vae.safetensors"))
    return tmp_path, dit, vae


def args(root: Path, out: Path, dit: str = "dit.safetensors", vae: str = "vae.safetensors") -> list[str]:
    return ["--dit", str(root / dit), "--vae", str(root / vae), "--height", "32", "--width", "48",
            "--vae-heads", "2", "--max-frames", "8", str(out)]  # fmt: skip


def test_round_trip(weights, capsys):
    root, dit, vae = weights
    stored = load_file(str(root / "dit.safetensors"))
    assert len(stored) < len(dit.state_dict())  # aliases of the shared rotary tables are not stored
    assert main(args(root, root / "out.ckpt")) == 0
    assert read_meta(root / "out.ckpt") == {"family": "oasis", "stage": "dit"}
    wm = load_world_model(root / "out.ckpt")
    assert wm.num_actions == 25 and wm.frame_shape == (32, 48, 3) and wm.dit.max_frames == 8
    for key, value in dit.state_dict().items():
        torch.testing.assert_close(wm.dit.state_dict()[key], value, rtol=0, atol=0)
    for key, value in vae.state_dict().items():
        torch.testing.assert_close(wm.vae.state_dict()[key], value, rtol=0, atol=0)
    x, t, a = torch.randn(1, 3, 8, 4, 6), torch.randint(0, 1000, (1, 3)), torch.rand(1, 3, 25)
    with torch.no_grad():
        torch.testing.assert_close(wm.dit(x, t, a), dit.eval()(x, t, a))
    wm.reset(torch.randint(0, 256, (1, 2, 32, 48, 3), dtype=torch.uint8), torch.zeros(1, 2, 25))
    assert wm.step(torch.rand(1, 25)).frames.shape == (1, 32, 48, 3)


def test_fixture_converts_and_reproduces(tmp_path):
    if not FIXTURE.is_dir():
        pytest.skip(f"{FIXTURE} not present")
    out = tmp_path / "fx.ckpt"
    argv = ["--dit", str(FIXTURE / "dit.safetensors"), "--vae", str(FIXTURE / "vae.safetensors"), "--height", "48",
            "--width", "64", "--vae-heads", "4", "--max-frames", "8", str(out)]  # fmt: skip
    assert main(argv) == 0
    wm = load_world_model(out)
    io = load_file(str(FIXTURE / "io.safetensors"))
    assert wm.dit.blocks[0].t_attn.rotary_emb.freqs.shape == (8,)
    with torch.no_grad():
        out_v = wm.dit(io["dit_x"], io["dit_t"], io["dit_external_cond"])
        dec = wm.vae.decode(io["vae_mean"])
    torch.testing.assert_close(out_v, io["dit_out"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dec, io["vae_dec"], atol=1e-5, rtol=1e-5)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_missing_key(weights, capsys):
    root, *_ = weights
    sd = load_file(str(root / "dit.safetensors"))
    del sd["blocks.1.t_mlp.fc2.weight"]
    save_file(sd, str(root / "bad.safetensors"))
    assert main(args(root, root / "o.ckpt", dit="bad.safetensors")) == 2
    assert "missing key 'blocks.1.t_mlp.fc2.weight'" in one_line_error(capsys)


def test_wrong_shape(weights, capsys):
    root, *_ = weights
    sd = load_file(str(root / "vae.safetensors"))
    sd["decoder.1.mlp.fc1.bias"] = torch.zeros(7)
    save_file(sd, str(root / "bad.safetensors"))
    assert main(args(root, root / "o.ckpt", vae="bad.safetensors")) == 2
    assert "decoder.1.mlp.fc1.bias has shape (7,)" in one_line_error(capsys)


def test_unexpected_key(weights, capsys):
    root, *_ = weights
    sd = load_file(str(root / "dit.safetensors"))
    sd["blocks.0.extra.weight"] = torch.zeros(2)
    save_file(sd, str(root / "bad.safetensors"))
    assert main(args(root, root / "o.ckpt", dit="bad.safetensors")) == 2
    assert "unexpected key 'blocks.0.extra.weight'" in one_line_error(capsys)


def test_not_safetensors_and_missing_file(weights, capsys):
    root, *_ = weights
    (root / "junk.safetensors").write_bytes(b"not a tensor file at all")
    assert main(args(root, root / "o.ckpt", dit="junk.safetensors")) == 2
    assert "junk.safetensors: not a safetensors file" in one_line_error(capsys)
    assert main(args(root, root / "o.ckpt", vae="nope.safetensors")) == 2
    assert "nope.safetensors: file not found" in one_line_error(capsys)
