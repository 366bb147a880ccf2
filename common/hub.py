"""Pretrained world models from the Hugging Face Hub, converted once into cached worldplay checkpoints.

    python -m common.hub list [--remote]          # known names, file sizes, downloaded / converted
    python -m common.hub download diamond/Breakout [--revision REV]   # download + convert; prints the path
    path = resolve("diamond/Breakout")            # what `pretrained=NAME` does (or a local upstream file)

Known names (`REGISTRY`):
- `diamond/<Game>`: DIAMOND's world model *and agent* for the 26 Atari 100k games, trained by DIAMOND's
  authors: Hub repo `eloialonso/diamond`, file `atari_100k/models/<Game>.pt` (an `Agent.state_dict()`),
  the list of games DIAMOND's player offers (`src/utils.py` ATARI_100K_GAMES). The converted checkpoint
  names the real environment it was trained in (`DIAMOND_ATARI_ENV`, sources below), so play and
  `common.evaluate_agent` can start the right one.
- `oasis/500m`: open-oasis' DiT-S/2 and ViT-L/20 VAE: Hub repo `Etched/oasis-500m`, files
  `oasis500m.safetensors` and `vit-l-20.safetensors`.

Downloads go through `huggingface_hub.hf_hub_download` only: its cache (`HF_HOME` / `HF_HUB_CACHE`),
resumed transfers, `revision`, `HF_HUB_OFFLINE=1` (cached files only, no network) and `HF_ENDPOINT`
(a mirror) all apply, read when `resolve` runs. The converted checkpoint lands in
`$WORLDPLAY_CACHE/converted/` (default `~/.cache/worldplay/`), named by a hash of the source files'
sha256, the game and the converter options: a second start finds it and converts nothing. Every
downloaded file is checked against its ETag (sha256 for LFS files, else git's blob sha1) the first time
it is seen (then its hashes are remembered by path, size and mtime); a corrupted or truncated file is
deleted from the Hugging Face cache and nothing is converted. Conversion writes a temporary file in the same folder, then renames it, under
a file lock: an interrupted or concurrent start never leaves a half-written checkpoint.

`resolve` also takes local files in the upstream formats: a DIAMOND agent `.pt` (with `game=` to name
its Atari game, checked against the checkpoint's action count), an open-oasis DiT `.safetensors` with
`vit-l-20.safetensors` beside it, or a folder holding both; a worldplay `.ckpt` is returned unchanged.
Bad input is one `HubError` line naming the name, file or setting at fault and the fix.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONVERTED_FORMAT = 1  # bump when a converter's output changes: older converted files are then ignored

# DIAMOND's Atari 100k games (eloialonso/diamond src/utils.py ATARI_100K_GAMES, 5bcd159)
ATARI_100K_GAMES = (
    "Alien", "Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "Boxing", "Breakout",
    "ChopperCommand", "CrazyClimber", "DemonAttack", "Freeway", "Frostbite", "Gopher", "Hero",
    "Jamesbond", "Kangaroo", "Krull", "KungFuMaster", "MsPacman", "Pong", "PrivateEye", "Qbert",
    "RoadRunner", "Seaquest", "UpNDown",
)  # fmt: skip

# The real environment DIAMOND's Atari agents were trained and evaluated in, as common.data.envs.AtariEnv
# options. Sources (eloialonso/diamond @ 5bcd159; the Hub repo's atari_100k/config/env/atari.yaml is the
# file DIAMOND's player downloads with each model and has the same fields):
# - config/env/atari.yaml: size 64; done_on_life_loss True for training, False for test episodes (the
#   adapter never ends an episode on a life loss: test behaviour); max_episode_steps null.
# - src/envs/env.py make_atari_env: gymnasium `<Game>NoFrameskip-v4` with full_action_space=False (the
#   minimal action set), frameskip=1 in ALE, then AtariPreprocessing(noop_max=30, frame_skip=4).
# - src/envs/atari_preprocessing.py: integers(1, noop_max + 1) no-ops at reset (1..30), the max over the
#   last 2 of the 4 skipped frames, cv2 INTER_AREA resize of the RGB screen to size x size (the
#   adapter's resize="area" gives the same bytes).
# - ale_py registration of `*NoFrameskip-v4`: repeat_action_probability 0.0 (no sticky actions),
#   max_num_frames_per_episode 108000 (27000 agent steps): the episode limit, as max_episode_steps is null.
# - config/trainer.yaml collection.test: epsilon 0.0, num_final_episodes 100; the agent samples actions from
#   its policy's softmax (src/coroutines/env_loop.py).
DIAMOND_ATARI_ENV: dict[str, Any] = {
    "size": 64,
    "frame_skip": 4,
    "noop_max": 30,
    "noop_min": 1,
    "sticky_actions": 0.0,
    "max_num_frames_per_episode": 108_000,
    "resize": "area",
}
DIAMOND_EVAL = {"epsilon": 0.0, "episodes": 100, "greedy": False}  # config/trainer.yaml collection.test

# DiamondModule options the weights cannot tell (config/agent/default.yaml denoiser; config/trainer.yaml
# world_model_env.diffusion_sampler): the converter's defaults, written out
DIAMOND_CONVERT = {"sigma_data": 0.5, "sigma_offset_noise": 0.3, "num_steps_denoising": 3, "sampler_order": 1}
# oasis.convert options: none, its defaults are the released models' (open-oasis generate.py: 360x640
# frames, ViT-L/20 VAE with 16 heads, a 32-frame DiT window)
OASIS_CONVERT: dict[str, Any] = {}


class HubError(ValueError):
    """Bad input or a failed download: one line naming what is at fault and the fix."""


@dataclass(frozen=True)
class Pretrained:
    """A known pretrained source. `files` maps a role (agent | dit | vae) to a path in the Hub repo."""

    name: str
    family: str
    repo_id: str
    files: dict[str, str]
    revision: str | None = None  # None: the repo's main branch
    game: str | None = None
    env: dict[str, Any] | None = None  # AtariEnv options of the real environment
    options: dict[str, Any] = field(default_factory=dict)  # converter options
    about: str = ""


def _registry() -> dict[str, Pretrained]:
    known = {
        f"diamond/{game}": Pretrained(
            name=f"diamond/{game}",
            family="diamond",
            repo_id="eloialonso/diamond",
            files={"agent": f"atari_100k/models/{game}.pt"},
            game=game,
            env=dict(DIAMOND_ATARI_ENV),
            options=dict(DIAMOND_CONVERT),
            about=f"DIAMOND world model + agent, Atari 100k {game}",
        )
        for game in ATARI_100K_GAMES
    }
    known["oasis/500m"] = Pretrained(
        name="oasis/500m",
        family="oasis",
        repo_id="Etched/oasis-500m",
        files={"dit": "oasis500m.safetensors", "vae": "vit-l-20.safetensors"},
        options=dict(OASIS_CONVERT),
        about="open-oasis 500M: DiT-S/2 + ViT-L/20 VAE, Minecraft, 25-d actions",
    )
    return known


REGISTRY: dict[str, Pretrained] = _registry()


# --------------------------------------------------------------------------------------------- settings
def cache_root() -> Path:
    """worldplay's cache folder: $WORLDPLAY_CACHE, else $XDG_CACHE_HOME/worldplay, else ~/.cache/worldplay."""
    if os.environ.get("WORLDPLAY_CACHE"):
        return Path(os.environ["WORLDPLAY_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "worldplay"


def offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().upper() in ("1", "ON", "YES", "TRUE")
    return bool(constants.HF_HUB_OFFLINE)


def hf_cache_dir() -> Path:
    """The Hugging Face cache as set now: $HF_HUB_CACHE, else $HF_HOME/hub, else huggingface_hub's default."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


# --------------------------------------------------------------------------------------------- lookup
def lookup(name: str) -> Pretrained:
    """The registry entry of `name` (case-insensitive); HubError listing the known names otherwise."""
    by_key = {k.lower(): v for k, v in REGISTRY.items()}
    if name.lower() in by_key:
        return by_key[name.lower()]
    close = difflib.get_close_matches(name.lower(), by_key, n=1, cutoff=0.75)
    hint = f"did you mean {by_key[close[0]].name}? " if close else ""
    games = ", ".join(ATARI_100K_GAMES)
    raise HubError(
        f"unknown pretrained model {name!r} ({hint}known: diamond/<Game> for the Atari 100k games {games}; "
        f"oasis/500m; `python -m common.hub list` shows them); a local file works too: "
        f"pretrained=PATH to a DIAMOND agent .pt, an open-oasis DiT .safetensors or a worldplay .ckpt"
    )


def _download_command(src: Pretrained) -> str:
    files = " ".join(src.files.values())
    rev = f" --revision {src.revision}" if src.revision else ""
    return f"`hf download {src.repo_id} {files}{rev}` (older clients: `huggingface-cli download ...`)"


def _download_error(src: Pretrained, filename: str, revision: str | None, e: Exception) -> HubError:
    from huggingface_hub import errors

    remote_missing = getattr(errors, "RemoteEntryNotFoundError", errors.EntryNotFoundError)
    rev = revision or "main"
    where = f"{src.repo_id}:{filename}"
    if isinstance(e, errors.RevisionNotFoundError):
        return HubError(f"{src.name}: revision {rev!r} not found in {src.repo_id} (at {endpoint()})")
    if isinstance(e, errors.RepositoryNotFoundError):
        return HubError(f"{src.name}: repository {src.repo_id} not found at {endpoint()} (check HF_ENDPOINT)")
    if isinstance(e, errors.LocalEntryNotFoundError) or isinstance(e, errors.OfflineModeIsEnabled):
        files = ", ".join(src.files.values())
        if offline():
            return HubError(
                f"{src.name}: {files} of {src.repo_id} (revision {rev}) not in the Hugging Face cache "
                f"{hf_cache_dir()} and HF_HUB_OFFLINE=1: download them where there is a network with "
                f"{_download_command(src)}, or unset HF_HUB_OFFLINE"
            )
        return HubError(
            f"{src.name}: cannot reach {endpoint()} for {where} and it is not in the Hugging Face cache "
            f"{hf_cache_dir()}: check the network / HF_ENDPOINT, or download it with {_download_command(src)}"
        )
    if isinstance(e, remote_missing):
        return HubError(f"{src.name}: {src.repo_id} has no file {filename} at revision {rev}")
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "Consistency check failed" in text:
        return HubError(
            f"{src.name}: download of {where} was incomplete ({text}); nothing was kept: run again"
        )
    return HubError(f"{src.name}: downloading {where} failed ({type(e).__name__}: {text})")


def download(src: Pretrained, revision: str | None = None) -> dict[str, Path]:
    """hf_hub_download every file of `src` -> {role: path in the Hugging Face cache}."""
    from huggingface_hub import hf_hub_download

    paths = {}
    for role, filename in src.files.items():
        try:
            path = hf_hub_download(
                src.repo_id,
                filename,
                revision=revision or src.revision,
                cache_dir=hf_cache_dir(),
                endpoint=os.environ.get("HF_ENDPOINT") or None,
                local_files_only=offline(),
            )
        except Exception as e:  # noqa: BLE001 - every failure becomes one line
            raise _download_error(src, filename, revision, e) from None
        paths[role] = Path(path)
    return paths


# --------------------------------------------------------------------------------------------- hashing
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA1 = re.compile(r"^[0-9a-f]{40}$")


def _digests(path: Path) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file, in one pass."""
    sha256, sha1 = hashlib.sha256(), hashlib.sha1()
    sha1.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            sha256.update(chunk)
            sha1.update(chunk)
    return sha256.hexdigest(), sha1.hexdigest()


def _etag(path: Path) -> str | None:
    """The ETag a Hugging Face cache file is stored under (its blob's name), None outside that layout."""
    blob = path.resolve()
    return (
        blob.name
        if blob.parent.name == "blobs" and (_SHA256.match(blob.name) or _SHA1.match(blob.name))
        else None
    )


def _memo_path(path: Path) -> Path:
    return cache_root() / "hashes" / (hashlib.sha1(str(path).encode()).hexdigest() + ".json")


def _file_digests(path: Path) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file, hashed once and then remembered by (absolute path, size,
    mtime) under the cache folder: a start after the first one only stats the file."""
    path = path.resolve()
    stat = path.stat()
    memo = _memo_path(path)
    stamp = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        saved = json.loads(memo.read_text())
        if {k: saved.get(k) for k in stamp} == stamp:
            return saved["sha256"], saved["sha1"]
    except (OSError, ValueError, KeyError):
        pass
    sha256, sha1 = _digests(path)
    _write_atomic(memo, json.dumps({**stamp, "sha256": sha256, "sha1": sha1}).encode())
    return sha256, sha1


def _remove_download(path: Path) -> None:
    """Delete a bad download from the Hugging Face cache: the snapshot link and the blob it points to."""
    blob = path.resolve()
    for p in (path, blob, _memo_path(blob)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _verify(src: Pretrained, role: str, path: Path) -> str:
    """Check a downloaded file against its ETag (sha256 or git sha1) -> its sha256. HubError if it differs
    (the file is then deleted from the Hugging Face cache, so the next start downloads it again)."""
    sha256, sha1 = _file_digests(path)
    etag = _etag(path)
    if etag is not None and etag not in (sha256, sha1):
        _remove_download(path)
        raise HubError(
            f"{src.name}: {src.repo_id}:{src.files[role]} is corrupted (sha256 {sha256[:12]}..., expected "
            f"{etag[:12]}...); it was removed from the Hugging Face cache, nothing was converted: run again"
        )
    return sha256


def _snapshot_commit(path: Path) -> str | None:
    """The commit of a Hugging Face cache file: the folder under `snapshots/` it sits in."""
    parts = path.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------- convert
def converted_path(family: str, shas: dict[str, str], game: str | None, options: dict) -> Path:
    """Where the converted checkpoint of these source files (by sha256), game and options lives: the
    same contents give the same file, whether named on the Hub or given as a local path."""
    spec = {"format": CONVERTED_FORMAT, "family": family, "sha256": shas, "game": game, "options": options}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]
    return cache_root() / "converted" / f"{family}-{game + '-' if game else ''}{digest}.ckpt"


def _check_game_actions(label: str, source_file: str, num_actions: int, game: str) -> None:
    from common.config import num_actions as env_num_actions

    want = env_num_actions("atari", game)
    if num_actions != want:
        raise HubError(
            f"{label}: {source_file} has {num_actions} actions but Atari {game} has {want} (ale-py's minimal "
            f"action set, as DIAMOND uses): it is not a {game} checkpoint; name its game with game=GAME"
        )


def _convert_diamond(src: Pretrained, files: dict[str, Path], out: Path, provenance: dict) -> None:
    from diamond.convert import module_from_diamond, read_diamond_state_dict, save_module_checkpoint

    try:
        sd = read_diamond_state_dict(files["agent"])
        module = module_from_diamond(sd, provenance["files"]["agent"]["name"], **src.options)
    except (ValueError, FileNotFoundError) as e:
        raise HubError(f"{src.name}: {e}") from None
    hp = module.hparams
    extra: dict[str, Any] = {"pretrained": provenance}
    if src.game is not None:
        _check_game_actions(src.name, provenance["files"]["agent"]["name"], hp.num_actions, src.game)
        extra["datamodule_hyper_parameters"] = {
            "source": "atari",
            "game": src.game,
            "env": dict(src.env or DIAMOND_ATARI_ENV),
            "frame_size": hp.frame_size,
            "num_actions": hp.num_actions,
        }
    save_module_checkpoint(module, out, extra=extra)


def _convert_oasis(src: Pretrained, files: dict[str, Path], out: Path, provenance: dict) -> None:
    from oasis.convert import convert

    tmp = out.with_name(f"{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        convert(files["dit"], files["vae"], tmp, **src.options)
        os.replace(tmp, out)
    except ValueError as e:
        raise HubError(f"{src.name}: {str(e).splitlines()[0]}") from None
    finally:
        tmp.unlink(missing_ok=True)


CONVERTERS = {"diamond": _convert_diamond, "oasis": _convert_oasis}


def _converted(
    src: Pretrained, files: dict[str, Path], verify: bool, revision: str | None, quiet: bool
) -> Path:
    """The converted checkpoint of `files`, converting (under a lock, atomically) on first use."""
    from filelock import FileLock

    shas = {r: _verify(src, r, p) if verify else _file_digests(p)[0] for r, p in files.items()}
    out = converted_path(src.family, shas, src.game, src.options)
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if out.is_file():  # converted by a concurrent start meanwhile
            return out
        provenance = {
            "name": src.name,
            "family": src.family,
            "repo_id": src.repo_id if verify else None,
            "revision": (revision or src.revision or "main") if verify else None,
            "commit": _snapshot_commit(files[next(iter(files))]) if verify else None,
            "files": {
                r: {
                    "name": src.files.get(r, p.name),
                    "path": str(p),
                    "sha256": shas[r],
                    "size": p.stat().st_size,
                }
                for r, p in files.items()
            },
            "game": src.game,
            "env": src.env,
            "options": src.options,
        }
        if not quiet:
            print(
                f"{src.name}: converting {', '.join(src.files.values())} (first use) -> {out}",
                file=sys.stderr,
            )
        start = time.perf_counter()
        CONVERTERS[src.family](src, files, out, provenance)
        provenance["convert_seconds"] = round(time.perf_counter() - start, 3)
        _write_atomic(out.with_suffix(".json"), json.dumps(provenance, indent=1).encode())
    return out


# --------------------------------------------------------------------------------------------- resolve
def _local_source(path: Path, game: str | None) -> tuple[Pretrained, dict[str, Path]]:
    """A local upstream file (or folder) -> a one-off registry entry and its files."""
    oasis = REGISTRY["oasis/500m"]
    if path.is_dir():
        files = {r: path / f for r, f in oasis.files.items()}
        missing = [f for r, f in oasis.files.items() if not files[r].is_file()]
        if missing:
            raise HubError(
                f"{path}: a folder must hold open-oasis' {' and '.join(oasis.files.values())} "
                f"(missing {', '.join(missing)})"
            )
        return Pretrained(str(path), "oasis", "", dict(oasis.files), options=dict(oasis.options)), files
    if path.suffix == ".safetensors":
        vae = path.with_name(oasis.files["vae"])
        if not vae.is_file():
            raise HubError(
                f"{path}: an open-oasis DiT needs its ViT-VAE beside it: put {oasis.files['vae']} in "
                f"{path.parent}, or pass the folder holding both"
            )
        files = {"dit": path, "vae": vae}
        return Pretrained(
            str(path), "oasis", "", {"dit": path.name, "vae": vae.name}, options=dict(oasis.options)
        ), files
    if game is not None:
        from common.data.envs import canonical_game

        try:
            game = canonical_game("atari", game)
        except ValueError as e:
            raise HubError(str(e)) from None
    src = Pretrained(
        str(path),
        "diamond",
        "",
        {"agent": path.name},
        game=game,
        env=dict(DIAMOND_ATARI_ENV) if game else None,
        options=dict(DIAMOND_CONVERT),
    )
    return src, {"agent": path}


def resolve(
    name_or_path: str | Path, revision: str | None = None, game: str | None = None, quiet: bool = False
) -> Path:
    """A worldplay checkpoint path for a known name (`REGISTRY`) or a local upstream file.

    name_or_path: "diamond/Breakout", "oasis/500m" (case-insensitive), a DIAMOND agent .pt, an open-oasis
    DiT .safetensors (VAE beside it) or folder, or a worldplay .ckpt (returned as is).
    revision: a branch, tag or commit of the Hub repo (default: main). game: the Atari game of a local
    DIAMOND file (a known name brings its own; giving another is an error). Raises HubError (one line).
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if text.lower() in {k.lower() for k in REGISTRY}:
        src = lookup(text)
        if game is not None and src.game is not None and game.lower() != src.game.lower():
            raise HubError(
                f"{src.name} is DIAMOND's {src.game} model: drop game={game} or pick diamond/{game}"
            )
        files = download(src, revision)
        return _converted(src, files, verify=True, revision=revision, quiet=quiet)
    if path.is_file() or path.is_dir():
        if path.suffix == ".ckpt":
            return path
        if revision is not None:
            raise HubError(f"{path}: revision= applies to Hub names, not to a local file")
        src, files = _local_source(path, game)
        return _converted(src, files, verify=False, revision=None, quiet=quiet)
    if path.suffix in (".pt", ".pth", ".ckpt", ".safetensors") or text.startswith(("/", ".", "~")):
        raise HubError(f"pretrained file not found: {path}")
    lookup(text)  # raises the unknown-name error
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------- list / CLI
def _cached_file(src: Pretrained, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(src.repo_id, filename, cache_dir=hf_cache_dir(), revision=src.revision)
    return Path(found) if isinstance(found, str) else None


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return "?"


def status(src: Pretrained, remote: bool = False) -> dict[str, Any]:
    """{size (bytes or None), downloaded (bool), converted (path or None)} of a registry entry, from the
    caches (and from the Hub's file metadata when `remote` and a file is not downloaded)."""
    cached = {r: _cached_file(src, f) for r, f in src.files.items()}
    sizes = {r: p.stat().st_size if p else None for r, p in cached.items()}
    if remote and not offline():
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        for r, f in src.files.items():
            if sizes[r] is None:
                try:
                    url = hf_hub_url(src.repo_id, f, revision=src.revision, endpoint=endpoint())
                    sizes[r] = get_hf_file_metadata(url).size
                except Exception:  # noqa: BLE001 - a size we cannot get stays unknown
                    pass
    downloaded = all(cached.values())
    converted = None
    if downloaded:
        shas = {r: _etag(p) for r, p in cached.items()}
        if all(s and _SHA256.match(s) for s in shas.values()):
            path = converted_path(src.family, shas, src.game, src.options)
            converted = path if path.is_file() else None
    total = None if any(s is None for s in sizes.values()) else sum(sizes.values())
    return {"size": total, "downloaded": downloaded, "converted": converted}


def list_table(remote: bool = False) -> str:
    rows = [("name", "Hub files", "size", "downloaded", "converted")]
    for src in REGISTRY.values():
        st = status(src, remote)
        files = f"{src.repo_id}: " + " + ".join(src.files.values())
        rows.append(
            (
                src.name,
                files,
                _size(st["size"]),
                "yes" if st["downloaded"] else "no",
                "yes" if st["converted"] else "no",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.append(
        f"Hugging Face cache: {hf_cache_dir()}{' (HF_HUB_OFFLINE=1)' if offline() else ''}; converted "
        f"checkpoints: {cache_root() / 'converted'}"
        + ("" if remote else "; sizes of files not downloaded: python -m common.hub list --remote")
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m common.hub", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="known pretrained models: sizes, downloaded, converted")
    ls.add_argument("--remote", action="store_true", help="ask the Hub for the sizes of files not downloaded")
    dl = sub.add_parser(
        "download", help="download and convert NAME (or a local file); print the checkpoint path"
    )
    dl.add_argument("name", help="e.g. diamond/Breakout, oasis/500m, or a local upstream file")
    dl.add_argument("--revision", default=None, help="branch, tag or commit of the Hub repo (default: main)")
    dl.add_argument("--game", default=None, help="Atari game of a local DIAMOND .pt")
    args = p.parse_args(argv)
    try:
        if args.command == "list":
            print(list_table(args.remote))
        else:
            start = time.perf_counter()
            path = resolve(args.name, revision=args.revision, game=args.game)
            print(f"{args.name}: {path} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
            print(path)
    except HubError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
