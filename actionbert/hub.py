"""Pretrained weights by name: resolved through `actionbert.weights_registry`, downloaded once, verified, cached.

```
"kinetics400_r2plus1d_18"   (or a local path, used as it is)
  -> REGISTRY entry -> <torch hub dir>/checkpoints/<file name>   (TORCH_HOME respected; shared with torchvision)
  -> cached? verify its SHA-256 against the entry -> path
  -> else torch.hub.download_url_to_file(url, path, hash_prefix): a temporary file in the same folder, hashed
     while it downloads, moved into place only when complete and matching; on any failure nothing is left
```

`ACTIONBERT_MIRROR=<base URL>` makes every download come from `<base URL>/<file name>` (for sites without
internet access that keep a copy). Files without a stable URL (Hara's, the reference implementation's) are never
downloaded: the error says where to get them and the exact path to put them at.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
from pathlib import Path

import torch

from actionbert.checkpoint import CheckpointError
from actionbert.weights_registry import REGISTRY, WeightsEntry

MIRROR_ENV = "ACTIONBERT_MIRROR"


class PretrainedError(CheckpointError):
    """Named pretrained weights that cannot be found, downloaded or verified (the message is one line)."""


def cache_dir() -> Path:
    """`<torch.hub.get_dir()>/checkpoints`: the folder torchvision's own downloads use (TORCH_HOME respected)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cache_path(entry: WeightsEntry) -> Path:
    return cache_dir() / entry.file_name


def download_url(entry: WeightsEntry) -> str | None:
    """Where the file is fetched from: `$ACTIONBERT_MIRROR/<file name>` when set, else the publisher's URL."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if entry.url is None:
        return None
    return f"{mirror.rstrip('/')}/{entry.file_name}" if mirror else entry.url


def get_entry(name: str) -> WeightsEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise PretrainedError(f"unknown pretrained weights name {name!r}; known: {', '.join(REGISTRY)}") from None


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(name: str, *, progress: bool = False) -> Path:
    """The verified local file of registry entry `name`, downloaded into the cache if it is not there yet.

    Args:
        name: a key of `REGISTRY`.
        progress: draw torch.hub's download progress bar on stderr (the CLI decides; the library stays quiet).

    Returns:
        The cached file. Raises `PretrainedError` (one line) when the file is not cached and cannot be downloaded
        (naming the URL to fetch by hand and the exact path to put it at), when a download does not match the
        published hash (nothing is kept), or when a cached file does not match it (the file is left alone).
    """
    entry = get_entry(name)
    path = cache_path(entry)
    if path.is_file():
        _check_cached(entry, path)
        return path
    url = download_url(entry)
    if url is None:
        raise PretrainedError(f"{entry.name} has no download URL: {entry.where_to_get}; put the file at {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=entry.sha256, progress=progress)
    except RuntimeError as e:
        if "invalid hash value" not in str(e):
            raise
        got = str(e).rsplit('got "', 1)[-1].rstrip('")')
        raise PretrainedError(
            f"{entry.name}: the file downloaded from {url} does not match its published SHA-256 (expected "
            f"{entry.sha256}..., got {got}): damaged, cut short or not the published file; nothing was kept. Retry, "
            f"or fetch it by hand and put it at {path}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = " ".join(str(getattr(e, "reason", e) or type(e).__name__).split())
        raise PretrainedError(f"cannot download {entry.name} ({reason}): fetch {url} by hand and put it at "
                              f"{path}") from None
    return path


def _check_cached(entry: WeightsEntry, path: Path) -> None:
    """A cached file must match the published hash; one that does not is reported, never deleted (it may be a
    file the user put there by hand)."""
    if entry.sha256 is None:
        return
    digest = sha256_of(path)
    if not digest.startswith(entry.sha256):
        raise PretrainedError(
            f"{path} does not match the published SHA-256 of {entry.name} (expected {entry.sha256}..., got "
            f"{digest}): not the published file, or damaged. Delete it to download it again"
            + (f" from {download_url(entry)}" if entry.url else ""))


def lookup(spec: str | Path) -> WeightsEntry | None:
    """The registry entry `spec` names; None for an existing path (a path wins over a name) or an unknown name."""
    return None if Path(spec).exists() else REGISTRY.get(str(spec))


def resolve(spec: str | Path, *, progress: bool = False) -> tuple[Path, WeightsEntry | None]:
    """A local path (used as it is) or a registry name (fetched, see `fetch`) -> (file, registry entry or None).

    A path that exists wins over a name, so every local file keeps working as before.
    """
    entry = lookup(spec)
    if entry is not None:
        return fetch(entry.name, progress=progress), entry
    if Path(spec).exists():
        return Path(spec), None
    raise PretrainedError(f"{spec}: no such file, and not a known pretrained weights name (`actionbert models "
                          f"--weights` lists them: {', '.join(REGISTRY)})")


def weights_table() -> list[dict]:
    """One row per registry entry for people: name, backbone, clip length, classes, size, cached or not."""
    rows = []
    for e in REGISTRY.values():
        path = cache_path(e)
        size = e.size_mib if e.size_mib is not None else (round(path.stat().st_size / 2**20, 1) if path.is_file()
                                                           else None)
        rows.append({"name": e.name, "backbone": e.backbone, "clip_len": e.clip_len, "classes": e.num_classes,
                     "labels": e.classes or "-", "size_MiB": size, "source": e.source,
                     "cached": "yes" if path.is_file() else ("no" if e.url else "no (get it by hand)")})
    return rows
