"""Train/val/test splits by seed (level / world / episode seed), so val and test are unseen levels.

`data.splits` maps a split name to either a half-open seed range `[lo, hi]` or a fraction of the
collected seed range [seed_start, seed_start + episodes): fractions are laid out in order
(train first), so `{train: 0.9, val: 0.05, test: 0.05}` gives three disjoint contiguous ranges.
"""

from __future__ import annotations

from collections.abc import Mapping


def split_ranges(splits: Mapping, seed_start: int, episodes: int) -> dict[str, tuple[int, int]]:
    """Resolve `data.splits` into {name: (lo, hi)} half-open seed ranges; overlapping ranges are an error."""
    ranges, cursor = {}, seed_start
    for name, value in splits.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not 0 <= value <= 1:
                raise ValueError(f"data.splits.{name}: fraction {value} not in [0, 1]")
            n = round(value * episodes)
            ranges[name] = (cursor, cursor + n)
            cursor += n
        else:
            lo, hi = (int(v) for v in value)
            if hi < lo:
                raise ValueError(f"data.splits.{name}: empty seed range [{lo}, {hi})")
            ranges[name] = (lo, hi)
    items = sorted(ranges.items(), key=lambda kv: kv[1])
    for (a, (_, hi_a)), (b, (lo_b, _)) in zip(items, items[1:]):
        if lo_b < hi_a:
            raise ValueError(f"data.splits: seed ranges of {a!r} and {b!r} overlap")
    return ranges


def split_of(seed: int, ranges: Mapping[str, tuple[int, int]]) -> str | None:
    for name, (lo, hi) in ranges.items():
        if lo <= seed < hi:
            return name
    return None
