"""README's Commands section opens with the workshop's three challenges, and every command it gives for
pretrained models composes: play.py and evaluate_agent take their keys, train.py takes init_from=, the
hub CLI parses, `make demo` runs the tiny Genie experiment."""

from __future__ import annotations

import re
import shlex

import pytest
from hydra import compose, initialize_config_dir

from common import hub
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def commands_section() -> str:
    return README.split("## Commands", 1)[1].split("\n## ", 1)[0]


def code_blocks(text: str) -> list[list[str]]:
    """The commands of each ``` block: lines without their # comments."""
    blocks = re.findall(r"```\n(.*?)```", text, flags=re.S)
    return [[line.split("  #")[0].strip() for line in b.splitlines() if line.strip()] for b in blocks]


def test_the_three_challenges_come_first():
    first = code_blocks(commands_section())[0]
    assert first == [
        "python play.py pretrained=diamond/Breakout",
        "make demo",
        "python play.py pretrained=oasis/500m context=file:start.png",
    ]
    demo = re.search(r"^demo:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), flags=re.M).group(1)
    assert "train.py experiment=genie_coinrun_tiny" in demo
    assert "python train.py experiment=genie_coinrun_tiny" in commands_section()


def overrides_of(command: str, entry: str) -> list[str]:
    words = shlex.split(command)
    return [w for w in words[words.index(entry) + 1 :] if "=" in w]


@pytest.mark.parametrize(
    "entry,config",
    [("play.py", "play"), ("common.evaluate_agent", "evaluate_agent"), ("train.py", "train")],
)
def test_pretrained_commands_compose(entry, config):
    commands = [c for block in code_blocks(commands_section()) for c in block]
    found = [c for c in commands if entry in c.split() and ("pretrained" in c or "policy=agent" in c)]
    assert found, f"README gives no pretrained command for {entry}"
    for command in found:
        overrides = [o.replace("episodes=N", "episodes=3") for o in overrides_of(command, entry)]
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            compose(config, overrides=overrides)  # every key exists


def test_hub_commands_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("WORLDPLAY_CACHE", str(tmp_path / "wp"))
    commands = [c for b in code_blocks(commands_section()) for c in b if c.startswith("python -m common.hub")]
    assert sorted(c.split()[3] for c in commands) == ["download", "list"]
    for command in commands:
        args = shlex.split(command)[3:]
        if args[0] == "list":
            assert hub.main(args) == 0 and "diamond/Breakout" in capsys.readouterr().out
        else:
            assert hub.lookup(args[1]).repo_id == "eloialonso/diamond"  # a known name (no download here)
