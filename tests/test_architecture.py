"""The architecture's rules, checked on the source: data flows one way, seams stay seams, types live once.

* No import cycle anywhere in ragmed, ragmed_ui and ragmed_eval — counting imports inside functions and
  under ``TYPE_CHECKING`` too (a cycle dodged by a local import is still a cycle).
* The core never imports the server, the CLI, the UI or eval.
* No ``isinstance`` on a concrete implementation (a retriever, a backend, …) outside the module that
  defines it: callers go through the protocol or ABC.
* Each shared type of :mod:`ragmed.schema` is defined there only, and the vocabularies it owns (exam
  kinds, retrieval modes, choice letters) are not spelled out anywhere else.
* A broad ``except`` in ragmed or the UI always re-raises: nothing unexpected becomes a user error.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from ragmed import schema

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"ragmed": REPO / "ragmed", "ragmed_ui": REPO / "ui", "ragmed_eval": REPO / "eval"}


def modules() -> dict[str, Path]:
    """Every module of the three packages by dotted name."""
    found: dict[str, Path] = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            if "__pycache__" in path.parts or path.name == "__main__.py":
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = modules()


@functools.cache
def tree(path: Path) -> ast.Module:
    """A module's syntax tree, parsed once for every check here (they only read it)."""
    return ast.parse(path.read_text(encoding="utf-8"))


def imports_of(name: str, path: Path) -> Iterator[str]:
    """Internal modules ``name`` imports anywhere in its source (resolving relative imports)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _internal(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield from _internal(candidate if candidate in MODULES else base)


def _internal(dotted: str) -> Iterator[str]:
    while dotted and dotted not in MODULES:
        dotted = dotted.rsplit(".", 1)[0] if "." in dotted else ""
    if dotted:
        yield dotted


GRAPH = {name: set(imports_of(name, path)) - {name} for name, path in MODULES.items()}


def test_the_walker_sees_the_packages() -> None:
    assert {
        "ragmed.pipeline",
        "ragmed.exam",
        "ragmed.retrieve.hybrid",
        "ragmed_ui.app",
        "ragmed_eval.runs",
    } <= set(GRAPH)
    assert "ragmed.pipeline" in GRAPH["ragmed.exam"]  # exam imports the pipeline …
    assert "ragmed.schema" in GRAPH["ragmed_eval.schema"]  # … eval imports the core's types


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components: any component of two or more modules is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_core_never_imports_server_cli_ui_or_eval() -> None:
    outer = ("ragmed.server", "ragmed.cli", "ragmed_ui", "ragmed_eval")
    core = [m for m in GRAPH if m.startswith("ragmed") and not m.startswith(outer)]
    offending = {m: sorted(t for t in GRAPH[m] if t.startswith(outer)) for m in core}
    assert not {m: t for m, t in offending.items() if t}
    # the CLI reaches the UI and eval only through entry points
    cli = {m: GRAPH[m] for m in GRAPH if m.startswith("ragmed.cli")}
    assert not {m: t for m, t in cli.items() if any(x.startswith(("ragmed_ui", "ragmed_eval")) for x in t)}


def implementations() -> dict[str, str]:
    """Concrete implementations of ragmed's seams: class name → defining module."""
    from ragmed.context import TokenCounter
    from ragmed.embeddings import Embedder
    from ragmed.generate.base import ChatBackend
    from ragmed.pipeline import PromptBuilder

    bases = (ChatBackend, TokenCounter, Embedder, PromptBuilder)
    found: dict[str, str] = {}
    for name in MODULES:
        if name.endswith("vllm_inprocess") or name.endswith(".convert_gguf"):
            continue  # needs vllm / transformers at import; checked by name below
        module = importlib.import_module(name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name or inspect.isabstract(cls):
                continue
            structural = callable(getattr(cls, "retrieve", None)) or callable(getattr(cls, "link", None))
            if issubclass(cls, bases) or structural:
                found[cls_name] = name
    found.update(
        {
            "InProcessLLM": "ragmed.generate.vllm_inprocess",
            "RagmedIndex": "ragmed.index",
            "Searcher": "ragmed.retrieve.hybrid",
        }
    )
    return found


def test_no_isinstance_on_a_concrete_implementation_outside_its_module() -> None:
    impls = implementations()
    assert {"LLMClient", "EchoBackend", "HybridRetriever", "DictionaryLinker", "LlamaIndexRetriever"} <= set(
        impls
    )
    offences = []
    for name, path in MODULES.items():
        for node in ast.walk(tree(path)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("isinstance", "issubclass"):
                classes = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
                for cls in classes:
                    cls_name = cls.id if isinstance(cls, ast.Name) else getattr(cls, "attr", None)
                    if cls_name in impls and impls[cls_name] != name:
                        offences.append(f"{path.relative_to(REPO)}:{node.lineno} isinstance(…, {cls_name})")
    assert not offences, offences


SHARED = sorted(n for n, v in vars(schema).items() if not n.startswith("_") and getattr(v, "__module__", "ragmed.schema") == "ragmed.schema" and n[0].isupper())  # fmt: skip


@pytest.mark.parametrize("name", SHARED)
def test_each_shared_type_is_defined_once(name: str) -> None:
    defined = []
    for module, path in MODULES.items():
        if module == "ragmed.schema":
            continue
        for node in tree(path).body:
            targets = []
            if isinstance(node, ast.ClassDef):
                targets = [node.name]
            elif isinstance(node, ast.Assign):
                targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                targets = [node.target.id]
            if name in targets:
                defined.append(f"{module}:{node.lineno}")
    assert not defined, f"{name} is ragmed.schema's, but is also defined in {defined}"


VOCABULARIES = {
    "exam kinds": re.compile(r"""["']single["']\s*,\s*["']multi["']\s*,\s*["']numeric["']"""),
    "retrieval modes": re.compile(r"""["']hybrid["']\s*,\s*["']dense["']\s*,\s*["']bm25["']"""),
    "choice letters": re.compile(r"abcdefghijklmnop"),
}


def test_vocabularies_are_spelled_out_only_in_schema() -> None:
    found = []
    for module, path in MODULES.items():
        if module == "ragmed.schema":
            continue
        text = path.read_text(encoding="utf-8")
        for what, pattern in VOCABULARIES.items():
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(REPO)}:{line} spells out the {what}")
    assert not found, found


def test_broad_excepts_in_ragmed_and_the_ui_always_reraise() -> None:
    offences = []
    for module, path in MODULES.items():
        if module.startswith("ragmed_eval"):
            continue  # eval keeps going per question by design, recording each failure
        for node in ast.walk(tree(path)):
            if not isinstance(node, ast.ExceptHandler):
                continue
            broad = node.type is None or getattr(node.type, "id", None) in ("Exception", "BaseException")
            reraises = any(isinstance(n, ast.Raise) for n in ast.walk(node))
            if broad and not reraises:
                offences.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offences, f"broad except without raise: {offences}"


# imports that no extra of pyproject.toml installs, and why
NOT_DECLARED = {
    "vllm": "lives in its own environment with its own torch (README: LLM servers); imported lazily",
}


def third_party_imports() -> dict[str, set[str]]:
    """Top-level third-party modules the three packages import anywhere (lazy imports included)."""
    found: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        for node in ast.walk(tree(path)):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top not in sys.stdlib_module_names and top not in PACKAGES and top != "__future__":
                    found.setdefault(top, set()).add(name)
    return found


def test_every_third_party_import_is_a_declared_dependency() -> None:
    """An import that works only because another package happens to pull its distribution in breaks
    when that package drops it (yaml came through transformers; threadpoolctl through scikit-learn)."""

    def canon(dist: str) -> str:
        return re.sub(r"[-_.]+", "-", dist).lower()

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"].values()
    specs = project["dependencies"] + [spec for extra in extras for spec in extra]
    declared = {canon(re.match(r"[A-Za-z0-9_.\-]+", spec).group()) for spec in specs}
    dists = packages_distributions()
    imports = third_party_imports()
    assert {"numpy", "yaml", "vllm"} <= imports.keys()  # the walker sees lazy imports too
    missing = {
        top: sorted(users)
        for top, users in imports.items()
        if top not in NOT_DECLARED and not {canon(d) for d in dists.get(top, [top])} & declared
    }
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
