"""Prompt templates as data files, selectable by name and versioned by content hash.

Prompts are kept out of code so that a clinician can review and change the wording without touching
Python, and so that every answer can say exactly which wording produced it: the template's
``sha256`` (of the file bytes) travels with each Answer as ``prompt_hash``.

A template is a YAML mapping of the fields of :class:`PromptTemplate`; each text field may use only
the ``{placeholders}`` listed in :data:`PLACEHOLDERS` and must use the required ones, checked at
load time so that a typo fails with the file and field named rather than mid-request.
"""

from __future__ import annotations

import hashlib
import string
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ragmed.errors import PromptTemplateError

# field -> (allowed placeholders, required placeholders)
PLACEHOLDERS: dict[str, tuple[set[str], set[str]]] = {
    "system": (set(), set()),
    "system_no_rag": (set(), set()),
    "context_item": (
        {"n", "title", "source", "text", "icd10", "standard_name", "kind", "language", "fence"},
        {"n", "text"},
    ),
    "diseases": ({"items"}, {"items"}),
    "user": ({"context", "diseases", "question"}, {"context", "question"}),
    "user_no_rag": ({"question"}, {"question"}),
    "empty_context": (set(), set()),
    "exam_system": (set(), set()),
    "exam_context": ({"context"}, {"context"}),
    "exam_user": (
        {"context_block", "question", "choices", "instruction"},
        {"question", "choices", "instruction"},
    ),
    "exam_single": ({"letters"}, set()),
    "exam_multi": ({"n", "letters"}, set()),
    "exam_multi_any": ({"letters"}, set()),
    "exam_numeric": (set(), set()),
    "exam_reasoning": (set(), set()),
    "exam_after_reasoning": ({"instruction"}, {"instruction"}),
}


class PromptTemplate(BaseModel):
    """One prompt template file, parsed and checked."""

    name: str
    description: str = ""
    system: str
    system_no_rag: str
    context_item: str
    diseases: str
    user: str
    user_no_rag: str
    empty_context: str
    exam_system: str
    exam_context: str
    exam_user: str
    exam_single: str
    exam_multi: str
    exam_multi_any: str
    exam_numeric: str
    exam_reasoning: str
    exam_after_reasoning: str
    # Filled by the loader, not read from the file.
    path: str = ""
    sha256: str = ""

    @property
    def version(self) -> str:
        """Short form of the content hash, for logs and UI."""
        return self.sha256[:12]

    def render(self, field: str, **values: Any) -> str:
        return getattr(self, field).format_map(values)


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def _builtin_dir() -> Path:
    return Path(str(resources.files(__name__)))


def list_templates() -> list[str]:
    """Names of the templates shipped with ragmed."""
    return sorted(p.stem for p in _builtin_dir().glob("*.yaml"))


def _resolve(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.parent != Path("."):
        if not candidate.is_file():
            raise PromptTemplateError(f"Prompt template file not found: {candidate}")
        return candidate
    builtin = _builtin_dir() / f"{name_or_path}.yaml"
    if not builtin.is_file():
        raise PromptTemplateError(
            f"Unknown prompt template {str(name_or_path)!r}; available: {', '.join(list_templates())} "
            "(or give a path to a .yaml file)."
        )
    return builtin


def parse_template(raw: bytes, origin: str) -> PromptTemplate:
    """Parse and check template file content; ``origin`` names it in errors."""
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PromptTemplateError(f"{origin}: not valid UTF-8 YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PromptTemplateError(f"{origin}: expected a mapping of fields, got {type(data).__name__}")
    unknown = set(data) - set(PromptTemplate.model_fields) | ({"path", "sha256"} & set(data))
    if unknown:
        raise PromptTemplateError(f"{origin}: unknown field(s) {sorted(unknown)}")
    try:
        template = PromptTemplate(**data)
    except ValidationError as exc:
        problems = "; ".join(f"field {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise PromptTemplateError(f"{origin}: {problems}") from exc
    for field, (allowed, required) in PLACEHOLDERS.items():
        try:
            used = _placeholders(getattr(template, field))
        except ValueError as exc:  # unbalanced braces
            raise PromptTemplateError(
                f"{origin}: field {field}: {exc} (write literal braces as {{{{ }}}})"
            ) from exc
        if used - allowed:
            raise PromptTemplateError(
                f"{origin}: field {field} uses unknown placeholder(s) {sorted(used - allowed)}; "
                f"allowed: {sorted(allowed) or 'none'}"
            )
        if required - used:
            raise PromptTemplateError(
                f"{origin}: field {field} must contain {sorted('{' + r + '}' for r in required - used)}"
            )
    template.path = origin
    template.sha256 = hashlib.sha256(raw).hexdigest()
    return template


@lru_cache(maxsize=32)
def _load_cached(path: str, mtime_ns: int) -> PromptTemplate:
    return parse_template(Path(path).read_bytes(), path)


def load_template(name_or_path: str | Path) -> PromptTemplate:
    """A shipped template by name (``clinical_ja``) or any template file by path."""
    path = _resolve(name_or_path)
    return _load_cached(str(path), path.stat().st_mtime_ns)
