"""Dataset folders are named from source and game (+ `_tiny` for the tiny experiments' smaller
collections), whichever experiment and however the game is typed; unknown games get one line listing the
accepted names and forms."""

from __future__ import annotations

import json

import pytest

from common.data.collect import collect
from common.data.envs import canonical_game, make_env
from common.data.shards import MANIFEST
from tests.conftest import ROOT, compose_train

DATASETS = {
    "genie_coinrun": "procgen_coinrun",
    "genie_coinrun_tiny": "procgen_coinrun_tiny",
    "diamond_breakout": "atari_Breakout",
    "diamond_breakout_tiny": "atari_Breakout_tiny",
    "oasis_crafter": "crafter_default",
    "oasis_crafter_tiny": "crafter_default_tiny",
    "compare_tiny": "procgen_coinrun_tiny",  # alone: its first cell
    "diamond_atari100k": "atari_Breakout",
    "diamond_atari100k_tiny": "atari_Breakout_tiny",
    "diamond_boxing_agent_tiny": "atari_Boxing_tiny",
    "diamond_assault_agent_tiny": "atari_Assault_tiny",
    "diamond_crazyclimber_agent_tiny": "atari_CrazyClimber_tiny",
    "diamond_krull_agent_tiny": "atari_Krull_tiny",
    "diamond_krull_atari100k_tiny": "atari_Krull_tiny",
}
MSPACMAN_FORMS = [
    "MsPacman", "ms_pacman", "mspacman", "ALE/MsPacman-v5", "MsPacman-v4", "MsPacmanNoFrameskip-v4",
    "MsPacmanDeterministic-v4",
]  # fmt: skip


def test_every_experiment_is_checked():
    assert set(DATASETS) == {p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")}


@pytest.mark.parametrize("experiment", sorted(DATASETS))
def test_experiment_dataset_name(experiment):
    assert compose_train([f"experiment={experiment}"]).data.name == DATASETS[experiment]


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        (["experiment=diamond_breakout_tiny", "data.game=Pong"], "atari_Pong_tiny"),
        (["experiment=diamond_breakout", "data.game=Pong"], "atari_Pong"),
        (["experiment=genie_coinrun_tiny", "data.game=ninja"], "procgen_ninja_tiny"),
        (["data=atari", "data.game=SpaceInvaders"], "atari_SpaceInvaders"),
        (["experiment=diamond_breakout_tiny", "data.name=my_breakout"], "my_breakout"),  # named by hand
    ],
)
def test_another_game_gets_its_own_folder(overrides, name):
    assert compose_train(overrides).data.name == name


@pytest.mark.parametrize("form", MSPACMAN_FORMS)
def test_atari_names_in_the_forms_people_type(form):
    cfg = compose_train(["experiment=diamond_breakout_tiny", f"data.game={form}"])
    assert cfg.data.name == "atari_MsPacman_tiny"
    env = make_env("atari", form)
    assert (env.game, env.env_id, env.num_actions) == ("MsPacman", "atari:MsPacman", 9)


@pytest.mark.parametrize(
    ("source", "forms", "name"),
    [
        ("atari", ["TicTacToe3D", "tic_tac_toe_3d", "ALE/TicTacToe3D-v5"], "TicTacToe3D"),
        ("atari", ["Pitfall2", "pitfall2"], "Pitfall2"),
        ("procgen", ["coinrun", "CoinRun", "procgen-coinrun-v0", "procgen:procgen-coinrun-v0"], "coinrun"),
        ("crafter", [None, "default", "Crafter", "CrafterReward-v1"], "default"),
    ],
)
def test_other_names(source, forms, name):
    assert [canonical_game(source, form) for form in forms] == [name] * len(forms)


@pytest.mark.parametrize(
    ("source", "game", "message"),
    [
        ("atari", "Breakoutt", "unknown Atari game 'Breakoutt' (did you mean Breakout? one of ale-py's 108 games, "
         "written as MsPacman, ms_pacman, ALE/MsPacman-v5 or MsPacmanNoFrameskip-v4: Adventure, AirRaid,"),
        ("atari", "notagame", "unknown Atari game 'notagame' (one of ale-py's 108 games, written as "),
        ("procgen", "CoinRunn", "unknown procgen game 'CoinRunn' (did you mean coinrun? known: bigfish, "),
        ("crafter", "coinrun", "crafter has one game: data.game=default (got 'coinrun')"),
    ],
)  # fmt: skip
def test_unknown_game_is_one_line_with_the_accepted_names(source, game, message):
    with pytest.raises(ValueError) as info:
        make_env(source, game)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text
    if source == "atari":
        assert {"Pong", "MsPacman", "SpaceInvaders", "Zaxxon"} <= set(text.split(": ", 1)[1][:-1].split(", "))


def test_one_game_typed_two_ways_is_one_dataset(tmp_path):
    """ms_pacman, then ALE/MsPacman-v5: one folder, one collection that the second run extends."""
    from tests.test_data_collect import _data_cfg

    first = collect(
        _data_cfg("atari", game="ms_pacman", episodes=1, max_steps=5, num_envs=1), tmp_path, False
    )
    second = _data_cfg("atari", game="ALE/MsPacman-v5", episodes=2, max_steps=5, num_envs=1)
    assert collect(second, tmp_path, progress=False) == first == tmp_path / "atari_MsPacman"
    manifest = json.loads((first / MANIFEST).read_text())
    assert manifest["game"] == manifest["collection"]["game"] == "MsPacman"
    assert sorted(s for shard in manifest["shards"] for s in shard["episode_seeds"]) == [0, 1]
