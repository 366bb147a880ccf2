"""MaskGIT (Chang et al. 2022) for Genie: training-time masking and cosine-schedule sampling of a frame.

Training: frames 2..T of a clip are masked with a Bernoulli rate drawn per clip from U[0.5, 1]; the
first frame stays visible as context. Sampling: a frame starts fully masked; at step s of S the
model predicts every token, samples the masked ones at `temperature`, keeps the most confident and
re-masks the rest so that floor(N * cos(pi/2 * (s+1)/S)) remain masked (0 after the last step).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def training_mask(
    shape: tuple[int, int, int], rate_range: tuple[float, float] = (0.5, 1.0), generator=None, device=None
) -> Tensor:
    """A bool mask (B, T, N): frame 0 never masked; frames 1.. masked at a rate ~ U[rate_range] per clip."""
    b, t, n = shape
    lo, hi = rate_range
    rate = lo + (hi - lo) * torch.rand(b, 1, 1, generator=generator, device=device)
    mask = torch.rand(b, t, n, generator=generator, device=device) < rate
    mask[:, 0] = False
    return mask


def num_masked_after(step: int, steps: int, num_tokens: int) -> int:
    """Tokens still masked after sampling step `step` (0-based) of `steps` under the cosine schedule."""
    return math.floor(num_tokens * math.cos(math.pi / 2 * (step + 1) / steps))


@torch.no_grad()
def sample_frame(
    logits_fn: Callable[[Tensor], Tensor],
    batch: int,
    num_tokens: int,
    mask_id: int,
    steps: int = 25,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    device=None,
) -> Tensor:
    """Iterative decoding of one frame. logits_fn(tokens (B, N) with mask_id) -> logits (B, N, K).

    Returns tokens (B, N) long. temperature 0 takes the argmax.
    """
    if steps < 1:
        raise ValueError(f"MaskGIT needs steps >= 1, got {steps}")
    tokens = torch.full((batch, num_tokens), mask_id, dtype=torch.long, device=device)
    for step in range(steps):
        masked = tokens == mask_id
        logits = logits_fn(tokens).float()
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1)
            # inverse-CDF sampling: much cheaper on CPU than torch.multinomial for (B*N, K) rows
            u = torch.rand(batch, num_tokens, 1, generator=generator, device=probs.device)
            cdf = probs.cumsum(-1)
            sampled = torch.searchsorted(cdf, u * cdf[..., -1:]).clamp_max(probs.shape[-1] - 1)[..., 0]
        else:
            probs = torch.softmax(logits, dim=-1)
            sampled = logits.argmax(-1)
        confidence = probs.gather(-1, sampled[..., None])[..., 0]
        confidence = torch.where(masked, confidence, torch.full_like(confidence, math.inf))
        tokens = torch.where(masked, sampled, tokens)
        keep_masked = num_masked_after(step, steps, num_tokens)
        if keep_masked > 0:
            lowest = confidence.topk(keep_masked, dim=-1, largest=False).indices
            tokens.scatter_(1, lowest, mask_id)
    return tokens
