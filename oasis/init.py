"""Weight init shared by the Oasis ViT-VAE and DiT: Xavier-uniform Linear layers with zero biases, and the
patch-embedding conv initialised as the Linear it is (its kernel flattened to (out, in * p * p))."""

from __future__ import annotations

from torch import nn


def init_vit_weights(module: nn.Module, patch_proj: nn.Conv2d) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    w = patch_proj.weight
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))
