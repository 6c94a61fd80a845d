"""Dataset registry: every exam/benchmark is a named loader that returns normalized ``Question``s.

WHY a registry (as in lm-evaluation-harness): the CLI, runner and UI pick tasks by name ("igakuqa",
"jmmlu:anatomy", "jmedbench:medmcqa_jp", or a task YAML's path) without knowing formats. Datasets that
differ only in fields and answer encoding are YAML definitions (``eval/tasks/*.yaml``, read by
``tabular.py``); the odd formats are Python (``igakuqa.py``: IgakuQA and DenQA; ``igakuqa119.py``).
Loaders read local paths only; a missing path raises ``DatasetNotFound`` saying where to get the data
(``ragmed eval fetch`` downloads by name where the network allows). Malformed rows raise
``DatasetError`` naming file and line; answer encodings we do not know are reported, never guessed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ConfigDict
from ragmed_eval import igakuqa, igakuqa119
from ragmed_eval.schema import Question
from ragmed_eval.tabular import DatasetInfo, TaskSpec, builtin_specs, load_task, spec_from_file

from ragmed.errors import DatasetNotFound, InputError

#: "harness": japanese-lm-med-harness's IgakuQA selection, text-only items with exactly five choices
#: (1455 of IgakuQA's 2000).
SUBSETS = ("all", "text_only", "image", "harness")


class DatasetSpec(DatasetInfo):
    """A registered dataset: its description and the loader that reads it."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    loader: Callable[[Path, str | None, str], list[Question]]
    langs: tuple[str, ...] = ("ja",)


def _tabular(spec: TaskSpec) -> DatasetSpec:
    def load(root: Path, option: str | None, lang: str) -> list[Question]:
        return load_task(spec, root, option)

    info = spec.model_dump(include=set(DatasetInfo.model_fields))
    return DatasetSpec(**info, loader=load, langs=(spec.lang,))


_PYTHON: dict[str, DatasetSpec] = {
    "igakuqa": DatasetSpec(
        name="igakuqa",
        title="IgakuQA",
        description="Japanese national medical licensing exam 2018-2022 (112th-116th), 2000 questions; "
        "--lang en reads IgakuQA's English translations (日英対訳)",
        source_url="https://github.com/jungokasai/IgakuQA",
        license="see the repository (exam text: Ministry of Health, Labour and Welfare)",
        rule="scripts/evaluate_main.py: split the prediction on ',', sort, compare with the sorted gold "
        "(no whitespace stripping); 116A71 correct for all; 112B30 accepts a or d; score = points of "
        "correct items",
        layout="data/{2018..2022}/{112..116}-{A..F}.jsonl (+ _metadata.jsonl, _translate.jsonl)",
        loader=lambda root, option, lang: igakuqa.load_igakuqa(root, option, lang=lang),
        options=["2018", "2019", "2020", "2021", "2022"],
        langs=("ja", "en"),
        fetch={"git": "https://github.com/jungokasai/IgakuQA"},
    ),
    "igakuqa119": DatasetSpec(
        name="igakuqa119",
        title="IgakuQA119",
        description="119th medical licensing exam (2025), 400 questions, 500 points; model answer files "
        "answers/<model>/119X_<model>.json reproduce results/leaderboard.json",
        source_url="https://github.com/docto-rin/IgakuQA119",
        license="Apache-2.0 (repository); exam text: Ministry of Health, Labour and Welfare",
        rule="src/grading_logic.py: strip, lowercase, drop [ ] , and spaces, sort; empty is wrong; 119E28 "
        "accepts a or c; blocks B/E questions 26-50 score 3, others 1",
        layout="questions/119{A..F}_json.json + results/correct_answers.csv (問題番号,解答)",
        loader=lambda root, option, lang: igakuqa119.load(root, option),
        options=["A", "B", "C", "D", "E", "F"],
        fetch={"git": "https://github.com/docto-rin/IgakuQA119"},
    ),
    "denqa": DatasetSpec(
        name="denqa",
        title="DenQA",
        description="Japanese national dental licensing exam 116 (2023) and 117 (2024), 720 questions; "
        "answer 'NA' = no valid answer (never credited)",
        source_url="https://github.com/aistairc/medLLM_QA_benchmark",
        license="see the repository (exam text: Ministry of Health, Labour and Welfare)",
        rule="scripts/evaluate_main.py: NFKC the prediction, 、/， -> ',', split on ',', strip each part, "
        "sort, compare with sorted(answer); 'NA' golds never match a letter answer",
        layout="data/ja/DenQA/denqa.jsonl (IgakuQA's fields)",
        loader=lambda root, option, lang: igakuqa.load_denqa(root, option),
        options=["116", "117"],
        fetch={"git": "https://github.com/aistairc/medLLM_QA_benchmark"},
    ),
}


def registry() -> dict[str, DatasetSpec]:
    """Every registered dataset: the Python loaders and the YAML definitions."""
    out = dict(_PYTHON)
    for name, spec in builtin_specs().items():
        out[name] = _tabular(spec)
    return dict(sorted(out.items()))


def list_datasets() -> list[DatasetSpec]:
    return list(registry().values())


def resolve(name: str) -> tuple[DatasetSpec, str | None]:
    """``"jmmlu:anatomy"`` -> (spec, "anatomy"); a path to a task YAML is its own definition."""
    if name.endswith((".yaml", ".yml")):
        return _tabular(spec_from_file(Path(name).expanduser())), None
    base, _, option = name.partition(":")
    spec = registry().get(base.lower())
    if spec is None:
        raise InputError(
            f"unknown dataset {name!r}; known: {', '.join(registry())} (or the path of a task .yaml)"
        )
    if option and spec.options and option not in spec.options and option != "all":
        raise InputError(f"{spec.name}: unknown option {option!r}; known: {', '.join(spec.options)}")
    return spec, option or None


def load_dataset(
    name: str, data_dir: str | Path, *, subset: str | None = None, lang: str | None = None
) -> list[Question]:
    """Load dataset ``name`` ("igakuqa", "jmmlu:anatomy", ...) from ``data_dir``.

    ``subset="text_only"`` drops items that refer to an image not in the data; ``lang="en"`` reads
    IgakuQA's English translations (the only bilingual dataset).
    """
    spec, option = resolve(name)
    lang = lang or spec.langs[0]
    if lang not in spec.langs:
        raise InputError(
            f"{spec.name} is published in {', '.join(spec.langs)} only, not {lang!r} (--lang en: IgakuQA's translations)"
        )
    if subset not in (None, "", *SUBSETS):
        raise InputError(f"unknown subset {subset!r} (use {', '.join(SUBSETS)})")
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise DatasetNotFound(
            f"{spec.name}: data directory {root} does not exist. ragmed reads datasets from local paths "
            f"only; get it from {spec.source_url} (layout: {spec.layout}) and pass --data-dir."
        )
    questions = spec.loader(root, option, lang)
    if not questions:
        raise DatasetNotFound(
            f"{spec.name}: no questions found under {root} (expected layout: {spec.layout})"
        )
    return apply_subset(questions, subset)


def apply_subset(questions: list[Question], subset: str | None) -> list[Question]:
    if subset in (None, "", "all"):
        return questions
    if subset == "text_only":
        return [q for q in questions if not q.has_image]
    if subset == "image":
        return [q for q in questions if q.has_image]
    if subset == "harness":
        return [q for q in questions if not q.has_image and len(q.choices) == 5]
    raise InputError(f"unknown subset {subset!r} (use {', '.join(SUBSETS)})")


def summarize(questions: list[Question]) -> dict[str, Any]:
    """What ``ragmed eval datasets --dataset … --data-dir …`` prints: counts and every repair made."""
    return {
        "n": len(questions),
        "kinds": dict(Counter(q.kind for q in questions)),
        "with_image": sum(q.has_image for q in questions),
        "unanswerable": [q.id for q in questions if q.unanswerable],
        "years": dict(Counter(str(q.year) for q in questions if q.year is not None)),
        "points": sum(q.points for q in questions),
        "repairs": [r for q in questions for r in q.repairs],
    }
