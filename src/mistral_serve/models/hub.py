"""Checkpoints already on this machine: a folder, or a Hugging Face repo id's newest snapshot
in the local cache (``Settings.hub_cache``: HF_HUB_CACHE, HF_HOME/hub, or
~/.cache/huggingface/hub). Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path


def local_folder(model: str, cache: Path | None) -> Path | None:
    """``model`` as a folder on this machine: itself when it is one, else the newest snapshot
    of that repo id in the Hugging Face ``cache`` that holds a config (config.json or
    params.json). ``cache`` None: folders only."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return folder
    if cache is None or "/" not in model or model.startswith(("/", ".", "~")):
        return None
    snapshots = cache / f"models--{model.replace('/', '--')}" / "snapshots"
    found = [
        snapshot
        for snapshot in snapshots.glob("*")
        if (snapshot / "config.json").exists() or (snapshot / "params.json").exists()
    ]
    return max(found, key=lambda snapshot: snapshot.stat().st_mtime) if found else None
