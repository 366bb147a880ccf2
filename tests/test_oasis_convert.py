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


# ---- sizes: what the files determine, what the flags give, and what neither can ---------------------------


def randomized(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """As the shared fixture's: matrices N(0, 1 / fan_in), norm weights 1 + N(0, 0.01), other vectors
    N(0, 0.01). open-oasis' init zeroes the adaLN and output layers, and small weights would leave attention
    too flat to tell one head count from another."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.requires_grad:
                noise = torch.randn(p.shape, generator=g)
                norm_weight = p.dim() == 1 and name.endswith(".weight")
                p.copy_(noise * p[0].numel() ** -0.5 if p.dim() >= 2 else 0.1 * noise + norm_weight)
    return module.eval()


def tiny_vae(enc_dim=24, enc_heads=2, dec_dim=24, dec_heads=4) -> AutoencoderKL:
    sizes = dict(
        enc_dim=enc_dim, enc_depth=1, enc_heads=enc_heads, dec_dim=dec_dim, dec_depth=2, dec_heads=dec_heads
    )
    vae = AutoencoderKL(latent_dim=8, input_height=32, input_width=48, patch_size=8, **sizes)
    return randomized(vae)


def tiny_dit(hidden=32, heads=2, actions=25) -> DiT:
    return randomized(DiT(input_h=4, input_w=6, patch_size=2, in_channels=8, hidden_size=hidden, depth=2,
                          num_heads=heads, external_cond_dim=actions, max_frames=8))  # fmt: skip


def save_pair(root: Path, dit: DiT, vae: AutoencoderKL) -> Path:
    save_model(dit, str(root / "dit.safetensors"))
    save_model(vae, str(root / "vae.safetensors"))
    return root


def convert_args(root: Path, *extra: str) -> list[str]:
    return ["--dit", str(root / "dit.safetensors"), "--vae", str(root / "vae.safetensors"), "--height", "32",
            "--width", "48", "--max-frames", "8", *extra, str(root / "out.ckpt")]  # fmt: skip


@pytest.mark.parametrize("enc_heads, dec_heads", [(2, 4), (4, 2), (1, 6)])  # head widths 12/6, 6/12, 24/4
def test_vae_encoder_and_decoder_heads_are_separate(tmp_path, enc_heads, dec_heads, capsys):
    """open-oasis' AutoencoderKL takes enc_heads and dec_heads apart; the heads are not in the weights."""
    vae = tiny_vae(enc_heads=enc_heads, dec_heads=dec_heads)
    root = save_pair(tmp_path, tiny_dit(), vae)
    heads = ["--vae-encoder-heads", str(enc_heads), "--vae-decoder-heads", str(dec_heads)]
    assert main(convert_args(root, *heads)) == 0
    assert f"encoder heads {enc_heads}, decoder heads {dec_heads}" in capsys.readouterr().out
    wm = load_world_model(root / "out.ckpt")
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).mean
        torch.testing.assert_close(wm.vae.encode(x).mean, z, rtol=0, atol=0)
        torch.testing.assert_close(wm.vae.decode(z), vae.decode(z), rtol=0, atol=0)
    # the same weights read with the encoder's head count for the decoder decode something else
    assert main(convert_args(root, "--vae-heads", str(enc_heads))) == 0
    with torch.no_grad():
        assert (load_world_model(root / "out.ckpt").vae.decode(z) - vae.decode(z)).abs().max() > 1e-3


def test_vae_heads_are_required_unless_the_layout_is_the_released_one(tmp_path, capsys):
    root = save_pair(tmp_path, tiny_dit(), tiny_vae())
    assert main(convert_args(root)) == 2
    err = one_line_error(capsys)
    assert "vae.safetensors: " in err and "--vae-encoder-heads" in err and "--vae-decoder-heads" in err
    assert not (root / "out.ckpt").exists()
    argv = [a for a in convert_args(root, "--vae-heads", "4") if a not in ("--height", "32")]
    assert main(argv) == 2 and "--height" in one_line_error(capsys)


def test_released_vae_layout_takes_open_oasis_sizes():
    """vit-l-20-shallow-encoder (open-oasis vae.py): 16 + 16 heads, 360x640 frames, unless flags say so."""
    from oasis.convert import infer_vae_hparams

    meta = lambda *shape: torch.empty(shape, device="meta")  # noqa: E731 - shapes only, no memory
    sd = {"patch_embed.proj.weight": meta(1024, 3, 20, 20), "quant_conv.weight": meta(32, 1024),
          "post_quant_conv.weight": meta(1024, 16)}  # fmt: skip
    sd |= {f"encoder.{i}.mlp.fc1.weight": meta(4096, 1024) for i in range(6)}
    sd |= {f"decoder.{i}.mlp.fc1.weight": meta(4096, 1024) for i in range(12)}
    h = infer_vae_hparams(sd, "vit-l-20.safetensors")
    assert (h["enc_heads"], h["dec_heads"], h["input_height"], h["input_width"]) == (16, 16, 360, 640)
    assert (h["enc_depth"], h["dec_depth"], h["mlp_ratio"], h["use_variational"]) == (6, 12, 4.0, True)
    h = infer_vae_hparams(sd, "vit-l-20.safetensors", height=180, width=320, enc_heads=8)
    assert (h["enc_heads"], h["dec_heads"], h["input_height"], h["input_width"]) == (8, 16, 180, 320)


def test_vae_width_that_does_not_split_into_the_heads(tmp_path, capsys):
    root = save_pair(tmp_path, tiny_dit(), tiny_vae())
    assert main(convert_args(root, "--vae-encoder-heads", "2", "--vae-decoder-heads", "5")) == 2
    err = one_line_error(capsys)
    assert "decoder width 24 does not split into 5 heads (--vae-decoder-heads)" in err


@pytest.mark.parametrize("head", [4, 6, 10, 12, 16, 20])
def test_vae_rotary_table_is_open_oasis_for_any_head_width(head):
    """open-oasis vae.py: RotaryEmbedding(dim=head_dim // 4, freqs_for='pixel', max_freq=gh * gw), axial over
    (gh, gw): head_dim // 8 frequencies pi * linspace(1, gh * gw / 2, .), each on an interleaved channel pair;
    rows (positions linspace(-1, 1, gh)) turn the first 2 * (head_dim // 8) channels, columns the next."""
    from oasis.vae import Attention

    gh, gw, n = 3, 5, head // 8
    freqs = torch.pi * torch.linspace(1, gh * gw / 2, n)
    rows = (
        (torch.linspace(-1, 1, gh)[:, None] * freqs).repeat_interleave(2, -1)[:, None].expand(gh, gw, 2 * n)
    )
    cols = (torch.linspace(-1, 1, gw)[:, None] * freqs).repeat_interleave(2, -1)[None].expand(gh, gw, 2 * n)
    expected = torch.cat((rows, cols), -1).reshape(gh * gw, 4 * n)
    torch.testing.assert_close(Attention(2 * head, 2, gh, gw).rotary_angles, expected)


@pytest.mark.parametrize("hidden, heads", [(24, 4), (40, 6), (36, 3), (32, 2)])  # head widths 6, 6, 12, 16
def test_dit_heads_are_read_from_the_file(tmp_path, hidden, heads, capsys):
    """open-oasis DiT: dim_head = hidden // heads (40 // 6 = 6: attention is 36 wide in a 40-wide model);
    the temporal rotary table has dim_head / 2 entries, to_qkv 3 * heads * dim_head rows."""
    dit = tiny_dit(hidden, heads)
    root = save_pair(tmp_path, dit, tiny_vae(24, 2, 24, 2))
    assert main(convert_args(root, "--vae-heads", "2")) == 0
    assert f"DiT: heads {heads} of width {hidden // heads}" in capsys.readouterr().out
    wm = load_world_model(root / "out.ckpt")
    assert wm.dit.blocks[0].t_attn.heads == heads
    x, t, a = torch.randn(1, 3, 8, 4, 6), torch.randint(0, 1000, (1, 3)), torch.rand(1, 3, 25)
    with torch.no_grad():
        torch.testing.assert_close(wm.dit(x, t, a), dit(x, t, a), rtol=0, atol=0)
        ctx = wm.dit.context_kv(x[:, :2], t[:, :2], a[:, :2], spare=1)
        cached = wm.dit.forward_cached(x[:, 2:], t[:, 2:], a[:, 2:], ctx)
    torch.testing.assert_close(cached, dit(x, t, a)[:, 2:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head", [6, 10, 12])
def test_dit_rotary_tables_are_open_oasis_for_head_widths_not_a_multiple_of_4(head):
    """open-oasis dit.py: spatial RotaryEmbedding(dim=head // 2, 'pixel', max_freq=256) -> head // 4
    frequencies pi * linspace(1, 128, .); temporal RotaryEmbedding(dim=head) -> 1 / 10000^(2i / head)."""
    dit = DiT(input_h=4, input_w=6, patch_size=2, in_channels=8, hidden_size=2 * head, depth=1, num_heads=2)
    torch.testing.assert_close(dit.spatial_rotary_emb.freqs, torch.pi * torch.linspace(1, 128, head // 4))
    temporal = 1 / 10000 ** (torch.arange(0, head, 2).float() / head)
    torch.testing.assert_close(dit.temporal_rotary_emb.freqs, temporal)
    assert dit.spatial_rotary_emb.axial_angles(2, 3).shape == (2, 3, 4 * (head // 4))


def test_dit_with_an_odd_head_width_is_refused_in_one_line(tmp_path, capsys):
    """open-oasis builds it but cannot run it: its temporal rotary cache is head-wide, the table even."""
    root = save_pair(tmp_path, tiny_dit(28, 2), tiny_vae())
    sd = load_file(str(root / "dit.safetensors"))  # 4 heads of width 7 have the same weight shapes
    sd["blocks.0.t_attn.rotary_emb.freqs"] = 1 / 10000 ** (torch.arange(0, 7, 2)[:3].float() / 7)
    sd["blocks.0.s_attn.rotary_emb.freqs"] = torch.pi * torch.linspace(1, 128, 1)
    save_file(sd, str(root / "dit.safetensors"))
    assert main(convert_args(root, "--vae-heads", "4")) == 2
    err = one_line_error(capsys)
    assert "dit.safetensors: " in err and "odd head width 7" in err


def test_dit_without_actions_converts(tmp_path, capsys):
    """open-oasis DiT(external_cond_dim=0) has no action layer; run without a condition it is an
    unconditioned video model: worldplay gives it one action, which changes nothing."""
    dit = tiny_dit(actions=0)
    root = save_pair(tmp_path, dit, tiny_vae())
    assert main(convert_args(root, "--vae-heads", "4")) == 0
    assert "no action input" in capsys.readouterr().out
    wm = load_world_model(root / "out.ckpt")
    assert wm.num_actions == 1
    x, t = torch.randn(1, 3, 8, 4, 6), torch.randint(0, 1000, (1, 3))
    with torch.no_grad():
        for a in (torch.zeros(1, 3, 1), torch.ones(1, 3, 1)):
            torch.testing.assert_close(wm.dit(x, t, a), dit(x, t, None), rtol=0, atol=0)
    wm.reset(torch.randint(0, 256, (1, 2, 32, 48, 3), dtype=torch.uint8), torch.zeros(1, 2, dtype=torch.long))
    assert wm.step(torch.zeros(1, dtype=torch.long)).frames.shape == (1, 32, 48, 3)


def test_latent_grid_that_the_dit_patch_does_not_tile(tmp_path, capsys):
    root = save_pair(tmp_path, tiny_dit(), tiny_vae())
    argv = convert_args(root, "--vae-heads", "4")
    argv[argv.index("48")] = "40"  # 32x40 frames: a 4x5 latent grid, DiT patch 2
    assert main(argv) == 2
    assert "latent grid 4x5" in one_line_error(capsys)


@pytest.mark.parametrize(
    "file, key, value, message",
    [
        (
            "dit",
            "blocks.0.s_attn.rotary_emb.freqs",
            torch.zeros(3),
            "has 3 entries, expected 4 for the head width 16",
        ),
        ("dit", "blocks.0.s_attn.to_qkv.weight", torch.zeros(90, 32), "has 90 rows, not 3 x heads x 16"),
        (
            "vae",
            "quant_conv.weight",
            torch.zeros(12, 24),
            "quant_conv makes 12 channels for 8 latent channels",
        ),
    ],
)
def test_sizes_the_file_contradicts(tmp_path, capsys, file, key, value, message):
    root = save_pair(tmp_path, tiny_dit(), tiny_vae())
    sd = load_file(str(root / f"{file}.safetensors"))
    sd[key] = value
    save_file(sd, str(root / f"{file}.safetensors"))
    assert main(convert_args(root, "--vae-heads", "4")) == 2
    err = one_line_error(capsys)
    assert f"{file}.safetensors: " in err and message in err
