"""One small Env adapter per data source, all with the same interface.

    env = make_env("procgen", "coinrun")      # or ("atari", "Breakout"), ("crafter", None)
    frame = env.reset(seed)                   # (H, W, C) uint8: first frame of that level / world / episode
    frame, reward, done = env.step(action)    # action: int in [0, env.num_actions)

When `done` is True the returned frame is not part of the episode (procgen has already moved on to
the next level's first frame); collectors stop there. `env.deterministic` says whether a reset on a seed
followed by the same actions gives the same frames (all three adapters do; play's replay of the real
env onto a recorded episode is exact only then). `canonical_game(source, game)` reads the game names people
type.

`env.truncated` tells why an episode ended: True when the last step hit a time limit (procgen's own
timeout, ALE's `max_num_frames_per_episode`, Crafter's `length`) rather than the game's own rules (a
death, a level complete, game over). A truncation is never stored as a terminal.
"""

from __future__ import annotations

import collections
import contextlib
import difflib
import io
import re
import struct
import warnings
from functools import cache

import numpy as np

SOURCES = ("procgen", "atari", "crafter")

PROCGEN_GAMES = (
    "bigfish", "bossfight", "caveflyer", "chaser", "climber", "coinrun", "dodgeball", "fruitbot",
    "heist", "jumper", "leaper", "maze", "miner", "ninja", "plunder", "starpilot",
)  # fmt: skip


class Env:
    """The adapter interface (attributes are set by each subclass)."""

    source: str
    env_id: str
    num_actions: int
    action_meanings: list[str]
    frame_shape: tuple[int, int, int]
    fps: int
    deterministic: bool  # reset(seed) + the same actions -> the same frames, rewards and ends, every run
    truncated: bool = False  # the last step ended the episode by a time limit, not by the game's rules

    def reset(self, seed: int) -> np.ndarray:
        raise NotImplementedError

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _check_action(self, action: int) -> int:
        action = int(action)
        if not 0 <= action < self.num_actions:
            raise ValueError(f"action {action} out of range for {self.env_id} (0..{self.num_actions - 1})")
        return action


# procgen's options (procgen/env.py ProcgenGym3Env) with their defaults; `distribution_mode` ours (Genie's
# CoinRun: hard). "exploration" mode fixes the level, and `use_sequential_levels` / `num_levels` change
# levels within an episode: both would break the one-level-per-seed episodes, so they are not offered.
PROCGEN_OPTIONS = {
    "distribution_mode": "hard",       # easy | hard | extreme | memory (level generation and sizes)
    "use_backgrounds": True,           # False: plain black backgrounds
    "restrict_themes": False,          # True: one theme per game element (fewer textures)
    "use_monochrome_assets": False,    # True: monochrome rectangles instead of sprites
    "center_agent": True,              # False: a fixed camera (the agent moves on screen)
    "paint_vel_info": False,           # True: the agent's velocity painted in the corner
    "use_generated_assets": False,     # True: procedurally generated sprites
}  # fmt: skip
PROCGEN_MODES = ("easy", "hard", "extreme", "memory")


def procgen_options(**options) -> dict:
    """`data.env` for procgen -> every option of PROCGEN_OPTIONS with its value (defaults filled in).
    One-line ValueError naming an unknown key (with the nearest known one) or a bad distribution mode."""
    for key in options:
        if key not in PROCGEN_OPTIONS:
            close = difflib.get_close_matches(key, PROCGEN_OPTIONS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ValueError(
                f"data.env.{key}: not a procgen option ({hint}known: {', '.join(PROCGEN_OPTIONS)})"
            )
    out = {**PROCGEN_OPTIONS, **options}
    if out["distribution_mode"] not in PROCGEN_MODES:
        raise ValueError(
            f"data.env.distribution_mode={out['distribution_mode']!r}: use one of {', '.join(PROCGEN_MODES)}"
        )
    for key, value in out.items():
        if key != "distribution_mode" and not isinstance(value, bool):
            raise ValueError(f"data.env.{key}={value!r}: use true or false")
    return out


class ProcgenEnv(Env):
    """Any procgen game at 64x64; `reset(seed)` plays level `seed` (num_levels=1, rand_seed=seed).

    options: procgen's options (PROCGEN_OPTIONS; `data.env`), all of them with their values in
    `self.options`, which collection stores in every shard (`env_options`)."""

    source = "procgen"
    fps = 15
    deterministic = True

    def __init__(self, game: str = "coinrun", **options):
        """time_limit: procgen's own episode length limit in steps (1000 in most games, 500 in maze and
        leaper, 2000-6000 in a few), read from the game's state; an episode it ends is truncated."""
        game = canonical_game("procgen", game)
        self.options = procgen_options(**options)
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")  # and gym's import-time notice on stderr: errors stay one line
            from procgen import ProcgenGym3Env
        self._cls, self.game, self.mode = ProcgenGym3Env, game, self.options["distribution_mode"]
        self.env_id = f"procgen:{game}-{self.mode}"
        self._env = None
        self._make(0)
        self.num_actions = int(self._env.ac_space.eltype.n)
        self.action_meanings = ["_".join(c) if c else "NOOP" for c in self._env.combos]
        self.frame_shape = tuple(self._env.ob_space["rgb"].shape)
        self.time_limit = _procgen_time_limit(self._env.get_state()[0], game)
        self._t = 0

    def _make(self, seed: int) -> None:
        if self._env is not None:
            self._env.close()
        self._env = self._cls(
            num=1,
            env_name=self.game,
            start_level=int(seed),
            num_levels=1,
            rand_seed=int(seed),
            **self.options,
        )

    def reset(self, seed: int) -> np.ndarray:
        self._make(seed)
        self._t, self.truncated = 0, False
        _, obs, _ = self._env.observe()
        return obs["rgb"][0].copy()

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        self._env.act(np.array([self._check_action(action)], dtype=np.int32))
        reward, obs, first = self._env.observe()
        self._t += 1
        done = bool(first[0])
        # procgen ends a level by its rules (a death, or a level complete: `prev_level_complete`) or at
        # its timeout, which it does not flag: an end at the time limit without a completed level is the
        # timeout (a death on that very step reads as a truncation too)
        complete = done and bool(self._env.get_info()[0]["prev_level_complete"])
        self.truncated = done and not complete and self._t >= self.time_limit
        return obs["rgb"][0].copy(), float(reward[0]), done

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


def _procgen_time_limit(state: bytes, game: str) -> int:
    """procgen's `timeout` (steps) from a serialized game state: procgen/src/game.cpp Game::serialize
    (SERIALIZE_VERSION 0) writes a version int, the game name, 17 ints (options, grid, level seeds,
    game type), two RandGens (an int and a string each), reward, done, level_complete, action, then
    timeout. Ints are 4-byte little-endian, strings an int length and the bytes."""
    offset = 0

    def read_int() -> int:
        nonlocal offset
        (value,) = struct.unpack_from("<i", state, offset)
        offset += 4
        return value

    def read_string() -> bytes:
        nonlocal offset
        n = read_int()
        offset += n
        return state[offset - n : offset]

    version, name = read_int(), read_string()
    if version != 0 or name != game.encode():
        raise RuntimeError(f"procgen {game}: unknown game state layout (version {version}, game {name!r})")
    offset += 17 * 4
    for _ in range(2):
        read_int(), read_string()
    offset += 4 * 4  # reward, done, level_complete, action
    return read_int()


class AtariEnv(Env):
    """ale-py with DIAMOND's preprocessing: frame-skip 4 with a max over the last 2 frames, up to 30
    no-op starts, RGB resized to 64x64, minimal action set, no sticky actions.

    noop_min, noop_max: a reset plays integers(noop_min, noop_max + 1) no-ops (DIAMOND: 1..30).
    resize: "box", PIL's BOX filter (this adapter's frames so far); "area", each pixel the mean of the
    screen area it covers, rounded: cv2.INTER_AREA's output exactly, which DIAMOND's frames are
    (src/envs/atari_preprocessing.py). The two differ by up to 70 levels on Atari screens.

    max_num_frames_per_episode: ALE's own time limit in emulator frames (4 per step; 0: none); an
    episode it ends is truncated, a game over (all lives lost) is a terminal.

    Deterministic: `reset(seed)` seeds the no-op count and ALE (whose sticky actions draw from it)."""

    source = "atari"
    fps = 15
    deterministic = True

    def __init__(
        self,
        game: str = "Breakout",
        size: int = 64,
        frame_skip: int = 4,
        noop_max: int = 30,
        sticky_actions: float = 0.0,
        max_num_frames_per_episode: int = 0,
        noop_min: int = 0,
        resize: str = "box",
    ):
        from ale_py import ALEInterface, LoggerMode, roms

        ALEInterface.setLoggerMode(LoggerMode.Error)
        game = canonical_game("atari", game)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._rom = roms.get_rom_path(_atari_roms()[_name_key(game)])
        if self._rom is None:
            raise ValueError(f"Atari game {game!r}: ale-py lists it but ships no ROM file for it")
        self._ale_cls, self.game = ALEInterface, game
        self.size, self.frame_skip, self.noop_max, self.sticky = size, frame_skip, noop_max, sticky_actions
        self.max_frames = int(max_num_frames_per_episode)
        if resize not in ("box", "area"):
            raise ValueError(
                f"atari resize={resize!r}: use 'box' (PIL BOX) or 'area' (cv2 INTER_AREA, DIAMOND)"
            )
        if not 0 <= noop_min <= noop_max:
            raise ValueError(f"atari noop_min={noop_min}: must lie in [0, noop_max={noop_max}]")
        self.noop_min, self.resize = int(noop_min), resize
        self.env_id = f"atari:{game}"
        self._ale = None
        self._load(0)
        self._actions = list(self._ale.getMinimalActionSet())
        self.num_actions = len(self._actions)
        self.action_meanings = [a.name for a in self._actions]
        self.frame_shape = (size, size, 3)
        self._rng = np.random.default_rng(0)

    def _load(self, seed: int) -> None:
        self._ale = self._ale_cls()
        self._ale.setInt("random_seed", int(seed) % (2**31 - 1))
        self._ale.setFloat("repeat_action_probability", float(self.sticky))
        self._ale.setInt("max_num_frames_per_episode", self.max_frames)
        self._ale.loadROM(self._rom)

    def _observe(self, screens: list[np.ndarray]) -> np.ndarray:
        from PIL import Image

        frame = np.maximum(screens[-2], screens[-1]) if len(screens) > 1 else screens[-1]
        if self.resize == "area":
            return area_resize(frame, self.size, self.size)
        return np.asarray(Image.fromarray(frame).resize((self.size, self.size), Image.BOX))

    def reset(self, seed: int) -> np.ndarray:
        self._load(seed)
        self._rng = np.random.default_rng(seed)
        for _ in range(int(self._rng.integers(self.noop_min, self.noop_max + 1))):
            self._ale.act(self._actions[0])
            if self._ale.game_over():
                self._ale.reset_game()
        self.truncated = False
        return self._observe([self._ale.getScreenRGB()])

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        ale_action = self._actions[self._check_action(action)]
        reward, screens = 0.0, []
        for i in range(self.frame_skip):
            reward += self._ale.act(ale_action)
            if i >= self.frame_skip - 2:
                screens.append(self._ale.getScreenRGB())
            if self._ale.game_over():
                break
        if not screens:
            screens.append(self._ale.getScreenRGB())
        done = bool(self._ale.game_over())  # game over or ALE's frame limit
        self.truncated = done and not self._ale.game_over(with_truncation=False)
        return self._observe(screens), float(reward), done


@cache
def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in): output pixel i averages input pixel j by their overlap, [i, i + 1) * n_in / n_out."""
    scale = n_in / n_out
    lo, hi = np.arange(n_out)[:, None] * scale, np.arange(1, n_out + 1)[:, None] * scale
    j = np.arange(n_in)[None]
    return np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0, None) / scale


def area_resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, C) -> uint8 (height, width, C), each pixel the mean of the area it covers, rounded
    half up (float64): equal to cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA) when
    shrinking (checked on 160 screens of 8 Atari games: 0 of 1,966,080 values differ)."""
    x = np.tensordot(_area_weights(frame.shape[0], height), frame.astype(np.float64), axes=(1, 0))
    x = np.tensordot(_area_weights(frame.shape[1], width), x, axes=(1, 1)).transpose(1, 0, 2)
    return np.floor(x + 0.5).astype(np.uint8)


class _InsertionOrderedSet:
    """The part of `set` that crafter's World uses for a chunk's objects (add, remove, iterate, len),
    iterating in insertion order rather than in the order of the objects' memory addresses."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: dict = {}

    def add(self, obj) -> None:
        self._items[obj] = None

    def remove(self, obj) -> None:
        del self._items[obj]

    def __contains__(self, obj) -> bool:
        return obj in self._items

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def _order_chunks(world) -> None:
    """Replace crafter's per-chunk `set`s of objects by insertion-ordered ones, members in the order the
    objects were added (World.objects' order), after a reset generated the world.

    `crafter.Env._balance_object` despawns `creatures[random.randint(0, len(creatures))]` from a list built
    by iterating the chunk's set, which hashes objects by identity: two runs of one seed with the same
    actions drew the same random numbers but removed different creatures, and diverged (danijar/crafter
    issues #31 and #36; with crafter 1.8.3, 5 of 8 worlds replayed in another process differed within
    256 sticky random steps, the first from frame 19 on).
    """
    chunks = getattr(world, "_chunks", None)
    if not isinstance(chunks, collections.defaultdict):
        raise RuntimeError("crafter.engine.World has no _chunks dict: this crafter version is not supported")
    ordered = collections.defaultdict(_InsertionOrderedSet)
    for key in chunks:  # keep the chunks' order: Env._balance_chunk visits them in it
        ordered[key] = _InsertionOrderedSet()
    for obj in world.objects:
        ordered[world.chunk_key(obj.pos)].add(obj)
    if {k: set(v) for k, v in ordered.items()} != {k: set(v) for k, v in chunks.items()}:
        raise RuntimeError(
            "crafter's chunk sets do not match its objects: this crafter version is not supported"
        )
    world._chunks = ordered


class CrafterEnv(Env):
    """The `crafter` package at 64x64 with its 17 actions; `reset(seed)` generates world `seed`.

    Deterministic from (seed, actions) because the adapter (1) iterates each chunk's creatures in insertion
    order (`_order_chunks`; crafter itself iterates a set ordered by memory address), and (2) renders
    exactly one observation per step (crafter's night noise draws from the world's random state)."""

    source = "crafter"
    fps = 10
    deterministic = True

    def __init__(self, size: int = 64, length: int = 10000):
        import crafter

        self._crafter, self.size, self.length = crafter, size, length
        self.env_id = "crafter"
        self.action_meanings = list(crafter.constants.actions)
        self.num_actions = len(self.action_meanings)
        self.frame_shape = (size, size, 3)
        self._env = None

    def reset(self, seed: int) -> np.ndarray:
        self._env = self._crafter.Env(size=(self.size, self.size), length=self.length, seed=int(seed))
        frame = self._env.reset()
        _order_chunks(self._env._world)
        return frame

    def step(self, action: int) -> tuple[np.ndarray, float, bool]:
        obs, reward, done, info = self._env.step(self._check_action(action))
        self.truncated = bool(done) and info["discount"] > 0  # crafter: discount 0 only on death
        return obs, float(reward), bool(done)


def make_env(source: str, game: str | None = None, **options) -> Env:
    """Build the adapter for `source` ("procgen", "atari", "crafter") and `game`, in any form
    `canonical_game` reads (None: the source's default game). One-line ValueError for unknown names."""
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r} (known: {', '.join(SOURCES)})")
    game = canonical_game(source, game)
    if source == "procgen":
        return ProcgenEnv(game, **options)
    if source == "atari":
        return AtariEnv(game, **options)
    return CrafterEnv(**options)


# the forms a game name takes elsewhere: Gymnasium / ALE ids and their variants, procgen's gym ids
_ATARI_FORMS = "MsPacman, ms_pacman, ALE/MsPacman-v5 or MsPacmanNoFrameskip-v4"
_ATARI_ID = re.compile(r"^(?:ale/)?(?P<game>.+?)(?:noframeskip|deterministic)?(?:-v\d+)?$", re.IGNORECASE)
_PROCGEN_ID = re.compile(r"^(?:procgen:)?(?:procgen-)?(?P<game>.+?)(?:-v\d+)?$", re.IGNORECASE)


def _name_key(name: str) -> str:
    """'Ms_Pac-man' -> 'mspacman': case, '_', '-' and spaces do not tell games apart."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@cache
def _atari_roms() -> dict[str, str]:
    """ale-py's ROM ids by name key: {'mspacman': 'ms_pacman', ...}."""
    from ale_py import roms

    ids = roms.get_all_rom_ids()
    keys = {_name_key(rom): rom for rom in ids}
    assert len(keys) == len(ids), "two ale-py ROM ids differ only in case or underscores"
    return keys


def _atari_name(rom: str) -> str:
    """'ms_pacman' -> 'MsPacman': the game's name in Gymnasium's ALE ids (ALE/MsPacman-v5)."""
    return rom.title().replace("_", "")


def canonical_game(source: str, game: str | None) -> str:
    """The one name of `game` in `source`, from the forms people type; a one-line ValueError otherwise.

    atari: any of ale-py's games as MsPacman, ms_pacman, mspacman, ALE/MsPacman-v5, MsPacman-v4,
    MsPacmanNoFrameskip-v4 or MsPacmanDeterministic-v4 -> 'MsPacman' (Gymnasium's spelling; the version
    and frame-skip parts name the game only: frame skip and sticky actions come from `data.env`).
    procgen: coinrun, CoinRun, procgen-coinrun-v0 or procgen:procgen-coinrun-v0 -> 'coinrun'.
    crafter: None, 'default', 'crafter' or 'CrafterReward-v1' -> 'default'. None for atari / procgen is
    their default game (Breakout / coinrun)."""
    game = None if game is None else str(game)  # data.game=123 arrives as an int
    if source == "atari":
        match = _ATARI_ID.match(game or "Breakout")
        rom = _atari_roms().get(_name_key(match["game"])) if match else None
        if rom is None:
            names = {key: _atari_name(rom) for key, rom in sorted(_atari_roms().items())}
            typed = _name_key(match["game"] if match else game)
            close = difflib.get_close_matches(typed, names, n=1, cutoff=0.8)
            hint = f"did you mean {names[close[0]]}? " if close else ""
            raise ValueError(
                f"unknown Atari game {game!r} ({hint}one of ale-py's {len(names)} games, written as "
                f"{_ATARI_FORMS}: {', '.join(sorted(names.values()))})"
            )
        return _atari_name(rom)
    if source == "procgen":
        match = _PROCGEN_ID.match(game or "coinrun")
        name = _name_key(match["game"]) if match else ""
        if name not in PROCGEN_GAMES:
            close = difflib.get_close_matches(name, PROCGEN_GAMES, n=1, cutoff=0.8)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ValueError(f"unknown procgen game {game!r} ({hint}known: {', '.join(PROCGEN_GAMES)})")
        return name
    if source == "crafter":
        if game is None or _name_key(game) in ("default", "crafter", "crafterreward", "crafterrewardv1"):
            return "default"
        raise ValueError(f"crafter has one game: data.game=default (got {game!r})")
    raise ValueError(f"unknown data source {source!r} (known: {', '.join(SOURCES)})")
