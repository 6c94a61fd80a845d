"""The real vLLM OpenAI-compatible server on this CPU machine (``ragmed llm serve-local``), as a
subprocess in its own process group, ready when ``GET /v1/models`` answers. Clients reach it like any
server, through :class:`~ragmed.generate.openai_client.LLMClient`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import httpx

from ragmed.errors import SetupError
from ragmed.generate.local.common import console, log_tail
from ragmed.generate.local.env import prepare_env
from ragmed.generate.local.model import prepare_model, served_name
from ragmed.settings import Settings

# fp32 on purpose: bf16 falls back to slow kernels on AVX2-only CPUs.
DEFAULT_SERVER_ARGS = ("--dtype", "float32", "--enforce-eager", "--max-model-len", "2048")
READY_TIMEOUT_S = 600.0  # generous: a loaded 2-core CI box needs minutes
#: A small server for a test session or a benchmark: warm-up and memory stay small.
SMALL_SERVER_ARGS = ("--max-num-seqs", "8")


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
        return log_tail(self.log_path, lines)

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
                raise SetupError(
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
                raise SetupError(
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
        raise SetupError(f"vLLM server exited with code {code}\n--- log tail ---\n{server.log_tail()}")
    except KeyboardInterrupt:
        console.print("stopping vLLM…")
    finally:
        server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
