"""Generation speed of OasisWorldModel with random weights (cached vs uncached context).

    python -m oasis.bench --layout tiny --context 16 --frames 20            # oasis_crafter_tiny's networks
    python -m oasis.bench --layout oasis500m --context 31 --frames 2        # the released sizes, full window

Each timed frame is one `step`: DDIM steps of the DiT (context at stabilization_level - 1) plus one VAE
decode. `--threads` sets torch's CPU threads.
"""

from __future__ import annotations

import argparse
import time

import torch

from oasis.diffusion import DiffusionForcing
from oasis.dit import DiT
from oasis.vae import AutoencoderKL
from oasis.world_model import OasisWorldModel

LAYOUTS = {
    "tiny": (
        dict(latent_dim=16, input_height=64, input_width=64, patch_size=8, enc_dim=64, enc_depth=1, enc_heads=4,
             dec_dim=128, dec_depth=2, dec_heads=4),
        dict(patch_size=2, hidden_size=128, depth=4, num_heads=4, external_cond_dim=17, max_frames=17),
    ),
    "oasis500m": (
        dict(latent_dim=16, input_height=360, input_width=640, patch_size=20, enc_dim=1024, enc_depth=6,
             enc_heads=16, dec_dim=1024, dec_depth=12, dec_heads=16),
        dict(patch_size=2, hidden_size=1024, depth=16, num_heads=16, external_cond_dim=25, max_frames=32),
    ),
}  # fmt: skip


def build(layout: str, use_cache: bool, ddim_steps: int) -> OasisWorldModel:
    vae_kw, dit_kw = LAYOUTS[layout]
    torch.manual_seed(0)
    vae = AutoencoderKL(**vae_kw)
    dit = DiT(input_h=vae.seq_h, input_w=vae.seq_w, in_channels=vae_kw["latent_dim"], **dit_kw)
    for p in dit.parameters():  # non-zero adaLN / final layer, as after training
        if p.requires_grad and p.dim() > 1:
            p.data.normal_(0, 0.02)
    df = DiffusionForcing(ddim_steps=ddim_steps)
    return OasisWorldModel(vae, dit, df, 1.0, dit_kw["external_cond_dim"], use_cache=use_cache)


@torch.inference_mode()
def seconds_per_frame(wm: OasisWorldModel, context: int, frames: int, warmup: int = 1) -> float:
    h, w, c = wm.frame_shape
    ctx = torch.randint(0, 256, (1, context, h, w, c), dtype=torch.uint8)
    wm.reset(ctx, torch.zeros(1, context, dtype=torch.long))
    action = torch.zeros(1, dtype=torch.long)
    for _ in range(warmup):
        wm.step(action)
    t0 = time.perf_counter()
    for _ in range(frames):  # the window keeps min(context, max_frames - 1) frames: the cost stays fixed
        wm.step(action)
    return (time.perf_counter() - t0) / frames


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m oasis.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--layout", choices=sorted(LAYOUTS), default="tiny")
    p.add_argument("--context", type=int, default=16, help="context frames (at most max_frames - 1 are used)")
    p.add_argument("--frames", type=int, default=20, help="timed generated frames")
    p.add_argument("--ddim-steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--modes", default="cached,uncached", help="comma-separated: cached, uncached")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    results = {}
    for mode in a.modes.split(","):
        wm = build(a.layout, use_cache=mode == "cached", ddim_steps=a.ddim_steps)
        n_params = sum(q.numel() for q in wm.dit.parameters()) / 1e6
        s = seconds_per_frame(wm, a.context, a.frames, warmup=1 if a.layout == "tiny" else 0)
        results[mode] = s
        print(f"{a.layout} {mode}: DiT {n_params:.1f}M params, context {min(a.context, wm.dit.max_frames - 1)}, "
              f"{a.ddim_steps} DDIM steps, {a.threads} threads: {s:.3f} s/frame ({1 / s:.1f} frames/s)")  # fmt: skip
    if len(results) == 2:
        print(f"cached speed-up: {results['uncached'] / results['cached']:.2f}x")


if __name__ == "__main__":
    main()
