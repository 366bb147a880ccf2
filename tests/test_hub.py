"""common.hub: pretrained names -> downloaded (real huggingface_hub client) -> converted once -> cached.

No network: a FakeHub on 127.0.0.1 serves the shared fixtures in the Hub's URL layout (HF_ENDPOINT
points at it; HF_HOME, HF_HUB_CACHE and WORLDPLAY_CACHE point into tmp_path). The DIAMOND fixture
(4 actions, as Breakout) stands in for atari_100k/models/Breakout.pt, the small open-oasis fixture for
the 500M files. Skips only when ../shared/fixtures is absent.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from common import hub
from common.checkpoint import read_checkpoint
from common.hub import HubError, resolve
from common.world_model import load_world_model
from tests.conftest import FIXTURES, ROOT
from tests.fake_hub import COMMIT, FakeHub

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"fixture folder {FIXTURES} is absent")

BREAKOUT = "atari_100k/models/Breakout.pt"
# the fixture's open-oasis sizes (fixtures README): what oasis/500m's converter options become in tests
OASIS_FIXTURE = {"height": 48, "width": 64, "enc_heads": 4, "dec_heads": 4, "max_frames": 8}


@contextmanager
def serving_fixtures(tmp_path: Path, monkeypatch) -> Iterator[FakeHub]:
    """A FakeHub with the fixtures as eloialonso/diamond and Etched/oasis-500m; HF_ENDPOINT pointed at it,
    the Hugging Face and worldplay caches in tmp_path (hf/, wp/). Other test modules use it too."""
    with FakeHub(tmp_path / "hub") as server:
        agent = (FIXTURES / "diamond" / "agent.pt").read_bytes()
        server.add("eloialonso/diamond", BREAKOUT, agent)
        server.add("eloialonso/diamond", "atari_100k/models/Pong.pt", agent)  # 4 actions: not Pong's 6
        server.add(
            "Etched/oasis-500m", "oasis500m.safetensors", (FIXTURES / "oasis/dit.safetensors").read_bytes()
        )
        server.add(
            "Etched/oasis-500m", "vit-l-20.safetensors", (FIXTURES / "oasis/vae.safetensors").read_bytes()
        )
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
        monkeypatch.setenv("WORLDPLAY_CACHE", str(tmp_path / "wp"))
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        oasis = dataclasses.replace(hub.REGISTRY["oasis/500m"], options=OASIS_FIXTURE)
        monkeypatch.setitem(hub.REGISTRY, "oasis/500m", oasis)
        yield server


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    with serving_fixtures(tmp_path, monkeypatch) as server:
        yield server


def converted_files(tmp_path) -> list[Path]:
    folder = tmp_path / "wp" / "converted"
    return sorted(p for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.is_dir() else []


def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text, text
    return text


def test_resolve_downloads_converts_once_then_reuses(fake_hub, tmp_path, monkeypatch):
    start = time.perf_counter()
    path = resolve("diamond/Breakout", quiet=True)
    first = time.perf_counter() - start
    assert path.is_file() and path.parent == tmp_path / "wp" / "converted"
    assert fake_hub.downloads(BREAKOUT) == 1
    wm = load_world_model(path)
    assert wm.num_actions == 4 and wm.policy is not None and wm.policy.num_actions == 4
    ckpt = read_checkpoint(path)
    assert ckpt["datamodule_hyper_parameters"]["game"] == "Breakout"
    assert ckpt["datamodule_hyper_parameters"]["env"] == hub.DIAMOND_ATARI_ENV
    assert ckpt["pretrained"]["repo_id"] == "eloialonso/diamond" and ckpt["pretrained"]["commit"] == COMMIT
    mtime = path.stat().st_mtime_ns

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setitem(hub.CONVERTERS, "diamond", no_conversion)
    start = time.perf_counter()
    assert resolve("DIAMOND/breakout", quiet=True) == path  # names are case-insensitive
    second = time.perf_counter() - start
    assert path.stat().st_mtime_ns == mtime and fake_hub.downloads(BREAKOUT) == 1
    print(
        f"resolve diamond/Breakout (fixture): first {first:.3f} s (download + convert), second {second:.3f} s"
    )
    assert [p.name for p in converted_files(tmp_path)] == [path.name, path.with_suffix(".json").name]


def test_offline_with_filled_cache_needs_no_server(fake_hub, tmp_path, monkeypatch):
    path = resolve("diamond/Breakout", quiet=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: any request would fail
    asked = len(fake_hub.requests)
    assert resolve("diamond/Breakout", quiet=True) == path
    assert len(fake_hub.requests) == asked


def test_offline_with_empty_cache_names_files_and_command(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError) as e:
        resolve("diamond/Breakout", quiet=True)
    msg = one_line(e)
    assert BREAKOUT in msg and "eloialonso/diamond" in msg and "HF_HUB_OFFLINE=1" in msg
    assert f"hf download eloialonso/diamond {BREAKOUT}" in msg and "huggingface-cli download" in msg
    assert fake_hub.requests == [] and converted_files(tmp_path) == []


def test_unknown_name_lists_known_ones_and_local_files(fake_hub):
    with pytest.raises(HubError) as e:
        resolve("diamond/Breakou")
    msg = one_line(e)
    assert "did you mean diamond/Breakout?" in msg and "oasis/500m" in msg and "UpNDown" in msg
    assert "local file works too" in msg
    with pytest.raises(HubError, match="pretrained file not found: .*missing.pt"):
        resolve("./missing.pt")


@pytest.mark.parametrize("converted_before", [False, True])
@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_bad_download_is_detected_not_converted_not_cached(
    fake_hub, tmp_path, monkeypatch, damage, converted_before
):
    hf = tmp_path / "hf" / "hub"
    before = []
    if converted_before:  # a good copy was converted; then a fresh Hugging Face cache gets a bad one
        resolve("diamond/Breakout", quiet=True)
        before = converted_files(tmp_path)
        hf = tmp_path / "hf2"
        monkeypatch.setenv("HF_HUB_CACHE", str(hf))
    fake_hub.corrupt[BREAKOUT] = damage
    with pytest.raises(HubError) as e:
        resolve("diamond/Breakout", quiet=True)
    msg = one_line(e)
    assert f"eloialonso/diamond:{BREAKOUT}" in msg
    assert ("incomplete" if damage == "truncate" else "corrupted") in msg
    assert converted_files(tmp_path) == before
    assert not list(hf.glob("models--*/blobs/*")) and not list(hf.rglob("Breakout.pt"))  # nothing kept
    del fake_hub.corrupt[BREAKOUT]  # the next start downloads again and succeeds
    assert load_world_model(resolve("diamond/Breakout", quiet=True)).num_actions == 4


def test_action_count_of_the_game_is_checked(fake_hub, tmp_path):
    with pytest.raises(HubError) as e:
        resolve("diamond/Pong", quiet=True)
    assert "atari_100k/models/Pong.pt has 4 actions but Atari Pong has 6" in one_line(e)
    assert converted_files(tmp_path) == []


def test_revision_and_missing_revision(fake_hub, tmp_path):
    assert resolve("diamond/Breakout", revision=COMMIT, quiet=True).is_file()
    with pytest.raises(HubError) as e:
        resolve("diamond/Breakout", revision="v9", quiet=True)
    assert "revision 'v9' not found in eloialonso/diamond" in one_line(e)
    with pytest.raises(HubError) as e:
        resolve("diamond/Alien", quiet=True)
    assert "eloialonso/diamond has no file atari_100k/models/Alien.pt" in one_line(e)


def test_local_upstream_file(fake_hub, tmp_path):
    local = tmp_path / "agent.pt"
    shutil.copy(FIXTURES / "diamond" / "agent.pt", local)
    path = resolve(local, game="breakout", quiet=True)  # game names in any form envs.py reads
    assert read_checkpoint(path)["datamodule_hyper_parameters"]["game"] == "Breakout"
    assert resolve(local, game="Breakout", quiet=True) == path  # hashed once, remembered
    no_game = resolve(local, quiet=True)
    assert no_game != path and "datamodule_hyper_parameters" not in read_checkpoint(no_game)
    with pytest.raises(HubError) as e:
        resolve(local, game="Pong", quiet=True)
    assert "agent.pt has 4 actions but Atari Pong has 6" in one_line(e)
    assert resolve(path) == path  # a worldplay checkpoint is returned as it is
    assert fake_hub.requests == []


def test_oasis_500m_two_files(fake_hub, tmp_path):
    path = resolve("oasis/500m", quiet=True)
    wm = load_world_model(path)
    assert wm.num_actions == 25 and wm.policy is None and wm.frame_shape == (48, 64, 3)
    assert fake_hub.downloads("oasis500m.safetensors") == fake_hub.downloads("vit-l-20.safetensors") == 1
    assert resolve("oasis/500m", quiet=True) == path


def test_local_open_oasis_files(fake_hub, tmp_path):
    folder = tmp_path / "oasis-500m"
    folder.mkdir()
    shutil.copy(FIXTURES / "oasis" / "dit.safetensors", folder / "oasis500m.safetensors")
    with pytest.raises(HubError) as e:
        resolve(folder / "oasis500m.safetensors", quiet=True)
    assert "needs its ViT-VAE beside it: put vit-l-20.safetensors in" in one_line(e)
    with pytest.raises(
        HubError, match="a folder must hold open-oasis' .* \\(missing vit-l-20.safetensors\\)"
    ):
        resolve(folder, quiet=True)
    shutil.copy(FIXTURES / "oasis" / "vae.safetensors", folder / "vit-l-20.safetensors")
    path = resolve(folder, quiet=True)
    assert resolve(folder / "oasis500m.safetensors", quiet=True) == path  # same files, same conversion
    assert load_world_model(path).num_actions == 25 and fake_hub.requests == []


def test_interrupted_conversion_leaves_nothing(fake_hub, tmp_path, monkeypatch):
    import diamond.convert

    def crash(ckpt, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(diamond.convert.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        resolve("diamond/Breakout", quiet=True)
    assert converted_files(tmp_path) == []


def test_cli_list_and_download(fake_hub, tmp_path, capsys):
    assert hub.main(["list"]) == 0
    out = capsys.readouterr().out
    assert len([line for line in out.splitlines() if line.startswith(("diamond/", "oasis/"))]) == 27
    row = next(line for line in out.splitlines() if line.startswith("diamond/Breakout "))
    assert row.split()[-3:] == ["?", "no", "no"], row
    assert hub.main(["download", "diamond/Breakout"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path.is_file()
    assert hub.main(["list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("diamond/Breakout "))
    assert row.split()[-4:] == ["1.5", "MB", "yes", "yes"], row
    assert hub.main(["list", "--remote"]) == 0  # sizes of files not downloaded, from the Hub's metadata
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert rows["diamond/Pong"][-4:] == ["1.5", "MB", "no", "no"] and rows["diamond/Alien"][-3] == "?"
    assert hub.main(["download", "diamond/Nope"]) == 1
    assert capsys.readouterr().err.startswith("error: unknown pretrained model 'diamond/Nope'")


def test_cli_subprocess_reads_the_environment(fake_hub, tmp_path):
    """As a user runs it: the env variables alone point huggingface_hub at the server and the caches."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    cmd = [sys.executable, "-m", "common.hub", "download", "diamond/Breakout"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip()).parent == tmp_path / "wp" / "converted"
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty"))
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and run.stderr.count("\n") == 1, run.stderr
    assert "huggingface-cli download" in run.stderr


def test_registry_games_are_alepy_games():
    """Every diamond/<Game> names an ale-py game under that very spelling (the env the agent needs)."""
    from common.data.envs import canonical_game

    assert len(hub.ATARI_100K_GAMES) == 26
    for game in hub.ATARI_100K_GAMES:
        assert canonical_game("atari", game) == game
