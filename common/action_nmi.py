"""Did a latent action model discover the game's controls? (`test/action_nmi`)

Over evaluation transitions, the latent action a latent action model (Genie's LAM) infers from frames t and
t+1 is paired with the environment action recorded for that transition. Their normalised mutual
information (NMI = I(Z; C) / mean(H(Z), H(C)), the arithmetic mean: scikit-learn's and torchmetrics'
default; computed by torchmetrics.functional.clustering.normalized_mutual_info_score) is 1 when each latent
action names one control and 0 when they are independent. `action_nmi_shuffled` is the same with the
recorded actions permuted across transitions, averaged over 100 seeded permutations: what a LAM unrelated to
the controls scores on this many transitions, since NMI on finite samples is biased above 0.
`action_nmi_p` is the permutation test's p-value, (1 + #{permutations scoring >= action_nmi}) / 101: below
0.05, the latent actions carry information about the controls beyond chance.

Many environment actions do the same thing, so actions are first grouped by their effect
(`control_groups`). procgen has 15 actions for every game (procgen/env.py `get_combos`); in CoinRun,
procgen's BasicAbstractGame::game_step (src/basic-abstract-game.cpp) turns actions 9-14 (D, A, W, S, Q, E)
into "stand still" with a special action CoinRun never reads, and src/games/coinrun.cpp reads the move as
horizontal direction (LEFT / none / RIGHT) and UP = jump (only when standing on something); DOWN does
nothing except let the agent fall through a crate it stands on (CoinRun::is_blocked_ents), so it is grouped
with no vertical input. The 6 CoinRun controls are NOOP, LEFT, RIGHT, JUMP, LEFT+JUMP, RIGHT+JUMP (Genie's
CoinRun model has 6 latent actions). Other environments keep one group per action.

The contingency table (latent action x control) says which control each latent action matches best:
`ActionProbe.compute()["best_control"]`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

# procgen's action combos in its order (procgen/env.py BaseProcgenEnv.get_combos), as the procgen adapter
# names them (common/data/envs.py: keys joined by "_", the empty combo "NOOP")
PROCGEN_ACTIONS = (
    "LEFT_DOWN", "LEFT", "LEFT_UP", "DOWN", "NOOP", "UP", "RIGHT_DOWN", "RIGHT", "RIGHT_UP",
    "D", "A", "W", "S", "Q", "E",
)  # fmt: skip
COINRUN_CONTROLS = ["NOOP", "LEFT", "RIGHT", "JUMP", "LEFT+JUMP", "RIGHT+JUMP"]


def _coinrun_control(action: str) -> str:
    keys = action.split("_")
    move = "LEFT" if "LEFT" in keys else "RIGHT" if "RIGHT" in keys else ""
    if "UP" in keys:
        return f"{move}+JUMP" if move else "JUMP"
    return move or "NOOP"


GROUPINGS: dict[str, list[str]] = {  # env ("source:game") -> the control of each of its actions
    "procgen:coinrun": [_coinrun_control(a) for a in PROCGEN_ACTIONS],
}
GROUP_NAMES: dict[str, list[str]] = {"procgen:coinrun": COINRUN_CONTROLS}


def control_groups(env: str | None, num_actions: int) -> tuple[list[str], list[int]]:
    """(control names, the control index of each environment action) for env "source:game"
    (e.g. "procgen:coinrun"); an env without a grouping (or None) has one control per action, named by
    its index. ValueError when the env's grouping has another number of actions."""
    if env not in GROUPINGS:
        return [str(a) for a in range(num_actions)], list(range(num_actions))
    controls, names = GROUPINGS[env], GROUP_NAMES[env]
    if len(controls) != num_actions:
        raise ValueError(f"action groups: {env} has {len(controls)} actions, got {num_actions}")
    return list(names), [names.index(c) for c in controls]


class ActionProbe:
    """Contingency table of latent action x control over evaluation transitions, and the NMI from it.

    num_latent: latent actions (rows); env: "source:game" for `control_groups`; num_env_actions: the
    environment's actions. `add(latent, actions)` counts pairs (any equal shapes, long); `compute(reduce)`
    sums the table over DDP ranks with `reduce` (a sum over ranks) first."""

    def __init__(
        self, num_latent: int, env: str | None, num_env_actions: int, seed: int = 0, permutations: int = 100
    ):
        self.controls, group = control_groups(env, num_env_actions)
        self.group = torch.tensor(group, dtype=torch.long)
        self.num_latent, self.seed, self.permutations = num_latent, seed, permutations
        self.table = torch.zeros(num_latent, len(self.controls), dtype=torch.long)

    def reset(self) -> None:
        self.table.zero_()

    def add(self, latent: Tensor, actions: Tensor) -> None:
        """latent: long (...) latent actions in [0, num_latent); actions: long (...) environment actions."""
        g, n = len(self.controls), self.num_latent
        pairs = latent.flatten().cpu() * g + self.group[actions.flatten().cpu()]
        self.table += torch.bincount(pairs, minlength=n * g).view(n, g)

    def compute(self, reduce: Callable[[Tensor], Tensor] | None = None) -> dict | None:
        """{"nmi", "nmi_shuffled" (mean over the permutations), "nmi_p" (permutation test), "transitions",
        "table" (num_latent x controls counts), "controls", "best_control", "best_share", "best_lift"};
        None before any `add`.

        best_control[z]: the control most over-represented among latent action z's transitions, argmax_c
        P(c | z) / P(c) (with a random policy most transitions are NOOP in CoinRun, 8 of its 15 actions, so
        the most frequent control would name most latent actions NOOP); None if z was never inferred.
        best_share[z] = P(c | z) and best_lift[z] = P(c | z) / P(c) of that control."""
        table = reduce(self.table.clone()) if reduce else self.table
        total = int(table.sum())
        if total == 0:
            return None
        cells = torch.arange(table.numel())
        pairs = cells.repeat_interleave(table.flatten())  # one (latent, control) cell index per transition
        latent, control = pairs // table.shape[1], pairs % table.shape[1]
        generator = torch.Generator().manual_seed(self.seed)
        nmi = _nmi(latent, control)
        shuffled = torch.tensor([_nmi(latent, control[torch.randperm(total, generator=generator)])
                                 for _ in range(self.permutations)])  # fmt: skip
        rows, cols = table.sum(1), table.sum(0)
        given = table / rows.clamp(min=1)[:, None]  # P(c | z)
        lift = given / (cols / total).clamp(min=1e-12)  # P(c | z) / P(c)
        best = lift.argmax(1)
        return {
            "nmi": nmi,
            "nmi_shuffled": float(shuffled.mean()),
            "nmi_p": float((1 + (shuffled >= nmi - 1e-12).sum()) / (1 + self.permutations)),
            "permutations": self.permutations,
            "transitions": total,
            "table": table.tolist(),
            "controls": list(self.controls),
            "best_control": [self.controls[int(c)] if r else None for c, r in zip(best, rows)],
            "best_share": [float(given[z, c]) if r else None for z, (c, r) in enumerate(zip(best, rows))],
            "best_lift": [float(lift[z, c]) if r else None for z, (c, r) in enumerate(zip(best, rows))],
        }


def _nmi(a: Tensor, b: Tensor) -> float:
    """torchmetrics' NMI (arithmetic normalisation) of two label vectors; 0 when either is constant."""
    import warnings

    from torchmetrics.functional.clustering import normalized_mutual_info_score

    with warnings.catch_warnings():  # its contingency table is a sparse tensor: a warning per call
        warnings.simplefilter("ignore", UserWarning)
        return float(normalized_mutual_info_score(a, b))


def latent_legend(checkpoint: str | Path, num_latent: int) -> list[str | None] | None:
    """What each latent action of a Genie checkpoint does, for play's legend: "RIGHT+JUMP 2.3x" (the control
    it matches best and its lift P(c | z) / P(c)) or None for a latent action the probe never saw inferred.

    Read from the `test/action_nmi` record of the run the checkpoint belongs to (<run dir>/test_records.json,
    written by the test of the dynamics stage; the run dir is the first of the checkpoint's parents holding
    one). None when there is no such record or it has another number of latent actions (a different model)."""
    import json

    for folder in list(Path(checkpoint).parents)[:3]:
        path = folder / "test_records.json"
        if path.is_file():
            try:
                record = json.loads(path.read_text()).get("test/action_nmi") or {}
            except (OSError, ValueError):
                return None
            best, lift = record.get("best_control"), record.get("best_lift")
            if not best or len(best) != num_latent:
                return None
            return [f"{c} {x:.1f}x" if c is not None else None for c, x in zip(best, lift)]
    return None
