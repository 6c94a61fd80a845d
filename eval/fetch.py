"""``ragmed eval fetch NAME --to DIR``: download a dataset by name from its public source.

WHY a separate step: loaders only ever read local files (ragmed hosts are often offline, and an eval run
must not depend on the network). Where the network is there, this saves looking up each dataset's URL;
where it is not, it says so and names the source to download by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ragmed_eval.datasets import resolve

from ragmed.errors import DatasetNotFound, InputError


def fetch(name: str, to: Path) -> Path:
    spec, _ = resolve(name)
    if not spec.fetch:
        raise InputError(
            f"{spec.name} has no public download ({spec.source_url}); point --data-dir at your files"
        )
    to = Path(to).expanduser()
    if to.exists() and any(to.iterdir()):
        raise InputError(f"{to} is not empty; fetch into a new folder")
    manual = f"download it by hand from {spec.source_url} into {to} (layout: {spec.layout})"
    if "git" in spec.fetch:
        git = shutil.which("git")
        if git is None:
            raise DatasetNotFound(f"{spec.name}: git is not installed; {manual}")
        res = subprocess.run(
            [git, "clone", "--depth", "1", spec.fetch["git"], str(to)],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},  # never wait for credentials
        )
        if res.returncode != 0:
            shutil.rmtree(to, ignore_errors=True)
            why = (res.stderr.strip().splitlines() or ["git clone failed"])[-1]
            raise DatasetNotFound(
                f"{spec.name}: could not clone {spec.fetch['git']} ({why}; offline?); {manual}"
            )
        return to
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub comes with sentence-transformers
        raise DatasetNotFound(f"{spec.name}: huggingface_hub is not installed; {manual}") from None
    try:
        snapshot_download(repo_id=spec.fetch["hf"], repo_type="dataset", local_dir=str(to))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as e:
        shutil.rmtree(to, ignore_errors=True)
        raise DatasetNotFound(
            f"{spec.name}: could not download {spec.fetch['hf']} from the Hugging Face hub "
            f"({type(e).__name__}; offline?); {manual}"
        ) from None
    return to
