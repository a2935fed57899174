"""Checkpoints already on this machine: a Hugging Face repo id's newest snapshot in the local
cache (HF_HUB_CACHE, HF_HOME/hub, or ~/.cache/huggingface/hub). Nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path


def hf_cache() -> Path:
    hub = os.environ.get("HF_HUB_CACHE")
    if hub:
        return Path(hub)
    home = os.environ.get("HF_HOME")
    return Path(home) / "hub" if home else Path.home() / ".cache" / "huggingface" / "hub"


def local_folder(model: str, cache: Path | None = None) -> Path | None:
    """``model`` as a folder on this machine: itself when it is one, else the newest cached
    snapshot of that repo id that holds a config (config.json or params.json)."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return folder
    if "/" not in model or model.startswith(("/", ".", "~")):
        return None
    snapshots = (cache or hf_cache()) / f"models--{model.replace('/', '--')}" / "snapshots"
    found = [
        snapshot
        for snapshot in snapshots.glob("*")
        if (snapshot / "config.json").exists() or (snapshot / "params.json").exists()
    ]
    return max(found, key=lambda snapshot: snapshot.stat().st_mtime) if found else None
