"""OmegaConf resolvers used by the configs; imported by every entry point before composing.

- `${wp_root:}`: the repository root (data/ and outputs/ default below it).
- `${wp_num_actions:source,game}`: the environment's action count, so `data.num_actions` is always right
  for the chosen game (Atari's minimal action sets differ per game).
- `${wp_game:source,game}`: the game's one name however it was typed (`ms_pacman`, `ALE/MsPacman-v5` ->
  `MsPacman`; `common.data.envs.canonical_game`), so dataset names follow the game.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"


@cache
def canonical_game(source: str, game: str | None = None) -> str:
    from common.data.envs import canonical_game

    return canonical_game(source, game)


@cache
def num_actions(source: str, game: str | None = None) -> int:
    if source == "procgen":
        return 15
    if source == "crafter":
        return 17
    from common.data.envs import make_env

    env = make_env(source, game)
    env.close()
    return env.num_actions


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("wp_root"):
        OmegaConf.register_new_resolver("wp_root", lambda: str(ROOT))
    if not OmegaConf.has_resolver("wp_num_actions"):
        OmegaConf.register_new_resolver("wp_num_actions", lambda s, g=None: num_actions(s, g))
    if not OmegaConf.has_resolver("wp_game"):
        OmegaConf.register_new_resolver("wp_game", lambda s, g=None: canonical_game(s, g))


register_resolvers()
