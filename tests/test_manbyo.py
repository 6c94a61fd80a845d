"""Manbyo loader: real xlsx/csv files in the official layout, and every way they go wrong."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from ragmed.errors import DownloadError
from ragmed.ingest.manbyo import ManbyoFormatError, fetch_manbyo, load_manbyo

from .conftest import FIXTURES, SAMPLES

HEADER = "出現形,出現形よみ,ICD10コード,標準病名,信頼度LEVEL,頻度LEVEL\n"


def write(tmp_path: Path, body: str, encoding: str = "utf-8", name: str = "m.csv") -> Path:
    path = tmp_path / name
    path.write_bytes((HEADER + body).encode(encoding))
    return path


def test_csv_with_bom_and_xlsx_with_old_icd_header_read_the_same_rows() -> None:
    from_csv = load_manbyo(FIXTURES / "manbyo" / "manbyo_small.csv")
    from_xlsx = load_manbyo(FIXTURES / "manbyo" / "manbyo_small.xlsx")
    assert len(from_csv) == len(from_xlsx) == 20
    key = lambda e: (e.surface, e.reading, e.icd10, e.standard_name, e.level, e.freq, e.row)  # noqa: E731
    assert [key(e) for e in from_csv] == [key(e) for e in from_xlsx]
    ami = next(e for e in from_xlsx if e.surface == "AMI")
    assert (ami.standard_name, ami.icd10, ami.level, ami.reading, ami.row) == (
        "急性心筋梗塞",
        "I219",
        "A",
        "エーエムアイ",
        3,
    )


def test_multi_code_multi_name_and_minus_one() -> None:
    entries = {e.surface: e for e in load_manbyo(SAMPLES / "manbyo_sample.csv")}
    assert entries["敗血症"].icd10_codes == ["A419", "A409"]
    assert entries["腰部痛"].standard_names == ["腰殿部痛", "殿部痛", "腰腹痛"]
    none = entries["異常陰影"]
    assert none.icd10 == "-1" and none.standard_name == "-1"
    assert none.icd10_codes == [] and none.standard_names == []


def test_a_cell_with_a_trailing_comma_names_one_disease(tmp_path: Path) -> None:
    # three rows of the real release end their 標準病名 cell with "，" (two codes, one name); the cell is
    # kept as written, its names are not padded with an empty one
    path = write(tmp_path, '糖尿病性腎症第２期,,"E14,E112",２型糖尿病性腎症第２期，,,\n')
    [entry] = load_manbyo(path)
    assert entry.standard_name == "２型糖尿病性腎症第２期，"
    assert entry.standard_names == ["２型糖尿病性腎症第２期"]
    assert entry.icd10_codes == ["E14", "E112"]
    # … and 43 write the no-name mark full-width beside a name: it is no name either
    path = write(tmp_path, '糖尿病性,,"E14,-1",糖尿病，−１,,\n')
    [entry] = load_manbyo(path)
    assert (entry.standard_name, entry.standard_names, entry.icd10_codes) == (
        "糖尿病，−１",
        ["糖尿病"],
        ["E14"],
    )


def test_cp932_file(tmp_path: Path) -> None:
    path = write(tmp_path, "心房細動,シンボウサイドウ,I489,心房細動,S,90-95\n", encoding="cp932")
    [entry] = load_manbyo(path)
    assert entry.standard_name == "心房細動" and entry.row == 2


def test_utf16_file_as_excel_saves_unicode_text(tmp_path: Path) -> None:
    # UTF-16 with its byte-order mark (cp932 would read it as noise), comma-separated …
    path = write(tmp_path, '心房細動,シンボウサイドウ,"I489,I480",心房細動,S,90-95\r\n', encoding="utf-16")
    [entry] = load_manbyo(path)
    assert (entry.standard_name, entry.icd10_codes, entry.row) == ("心房細動", ["I489", "I480"], 2)
    # … or tab-separated, as Excel's "Unicode text" (*.txt) saves a sheet, multi-code cell quoted
    tsv = tmp_path / "MANBYO.txt"
    tsv.write_text(
        HEADER.replace(",", "\t").replace("\n", "\r\n")
        + '心房細動\tシンボウサイドウ\t"I489,I480"\t心房細動\tS\t90-95\r\n',
        encoding="utf-16",
    )
    [entry] = load_manbyo(tsv)
    assert (entry.standard_name, entry.icd10_codes, entry.level) == ("心房細動", ["I489", "I480"], "S")


def test_a_working_file_with_its_own_column_names_keeps_levels_and_readings(tmp_path: Path) -> None:
    # the lab's later working CSVs (DIC_C_MANBYO_作業_….csv) spell the optional columns otherwise and add more
    path = tmp_path / "DIC_C_MANBYO_work.csv"
    path.write_text(
        "SEQ,ID,出現形,出現形よみ1,出現形よみ2,標準病名,標準病名よみ,ICDコード,信頼度レベル,頻度レベル\n"
        "1,M1,心房細動,シンボウサイドウ,,心房細動,シンボウサイドウ,I489,S,90-95\n"
        "2,M2,ＡＦ,エーエフ,,心房細動,シンボウサイドウ,I489,B,70-80\n",
        encoding="utf-8",
    )
    entries = load_manbyo(path)
    assert [(e.surface, e.reading, e.level, e.freq) for e in entries] == [
        ("心房細動", "シンボウサイドウ", "S", "90-95"),
        ("ＡＦ", "エーエフ", "B", "70-80"),
    ]
    assert [e.surface for e in load_manbyo(path, levels=["S"])] == ["心房細動"]


def test_level_filter(tmp_path: Path) -> None:
    levels = {e.level for e in load_manbyo(SAMPLES / "manbyo_sample.csv", levels=["s", "A"])}
    assert levels == {"S", "A"}
    with pytest.raises(ManbyoFormatError, match="unknown level"):
        load_manbyo(SAMPLES / "manbyo_sample.csv", levels=["Z"])


def test_optional_columns_may_be_absent(tmp_path: Path) -> None:
    path = tmp_path / "min.csv"
    path.write_text(
        "出現形,ICD10コード,標準病名\nＣＭＶ感染症,B259,サイトメガロウイルス感染症\n", encoding="utf-8"
    )
    [entry] = load_manbyo(path)
    assert entry.reading == "" and entry.level == "" and entry.surface == "ＣＭＶ感染症"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("高血圧,,I10,高血圧症,S,\n,,I10,高血圧症,S,\n", r"m\.csv: row 3: empty 出現形"),
        ("高血圧,,I10,,S,\n", r"m\.csv: row 2: empty 標準病名"),
        ("高血圧,,I10,高血圧症,X,\n", r"m\.csv: row 2: 信頼度LEVEL 'X'"),
        ("高血圧,,I10,高血圧症,S,\n糖尿病,,E14\n", r"m\.csv: row 3: 3 fields, the header has 6"),
    ],
)
def test_malformed_rows_name_file_and_row(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ManbyoFormatError, match=message):
        load_manbyo(write(tmp_path, body))


def test_missing_columns_and_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "cols.csv"
    path.write_text("surface,name\nx,y\n", encoding="utf-8")
    with pytest.raises(
        ManbyoFormatError, match=r"cols\.csv: missing column\(s\) 出現形, 標準病名, ICD10コード or ICDコード"
    ):
        load_manbyo(path)
    fake = tmp_path / "fake.xlsx"
    fake.write_text("not a workbook", encoding="utf-8")
    with pytest.raises(ManbyoFormatError, match=r"fake\.xlsx: not a readable xlsx"):
        load_manbyo(fake)
    with pytest.raises(ManbyoFormatError, match="no such file"):
        load_manbyo(tmp_path / "absent.csv")


def test_release_zip(tmp_path: Path) -> None:
    archive = tmp_path / "MANBYO_TEST.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(FIXTURES / "manbyo" / "manbyo_small.xlsx", "MANBYO_TEST/MANBYO_TEST.xlsx")
    assert len(load_manbyo(archive)) == 20


def test_release_zip_made_on_a_mac_skips_its_resource_forks(tmp_path: Path) -> None:
    # macOS's Archive Utility writes __MACOSX/._<name> (AppleDouble, no workbook) beside each file, and the
    # listing may put it first; a zip of an open workbook holds Excel's ~$ lock file
    archive = tmp_path / "MANBYO_TEST.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(
            "__MACOSX/MANBYO_TEST/._MANBYO_TEST.xlsx", b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        "
        )
        zf.writestr("MANBYO_TEST/~$MANBYO_TEST.xlsx", b"\x0bwho\x00")
        zf.write(FIXTURES / "manbyo" / "manbyo_small.xlsx", "MANBYO_TEST/MANBYO_TEST.xlsx")
    assert len(load_manbyo(archive)) == 20


def test_node_text_and_metadata() -> None:
    entry = next(e for e in load_manbyo(SAMPLES / "manbyo_sample.csv") if e.surface == "CHF")
    node = entry.to_node()
    for piece in ("CHF", "うっ血性心不全", "I500", "信頼度: B"):
        assert piece in node.get_content()
    assert node.metadata["standard_name"] == "うっ血性心不全" and node.metadata["kind"] == "manbyo"
    assert node.node_id == "manbyo:manbyo_sample.csv:10"


def test_fetch_offline_says_what_to_do(tmp_path: Path) -> None:
    # A real download attempt against a closed local port: the machine's offline behaviour.
    with pytest.raises(DownloadError, match="Download the release zip by hand") as exc:
        fetch_manbyo(tmp_path, url="http://127.0.0.1:9/MANBYO_202106.zip", timeout=2)
    assert "127.0.0.1:9/MANBYO_202106.zip" in str(exc.value)
    assert not list(tmp_path.iterdir())


def test_fetch_tries_each_spelling_of_the_official_address(tmp_path: Path) -> None:
    """A real HTTP server on 127.0.0.1 that has the release only under the second spelling."""
    import http.server
    import threading

    payload = (FIXTURES / "manbyo" / "manbyo_small.xlsx").read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/manbyou-dic/MANBYO_202106.zip":
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            else:
                self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        urls = [f"{base}/manbyo-dic/MANBYO_202106.zip", f"{base}/manbyou-dic/MANBYO_202106.zip"]
        got = fetch_manbyo(tmp_path / "dl", urls=urls, timeout=5)
        assert got.name == "MANBYO_202106.zip" and got.read_bytes() == payload
        with pytest.raises(DownloadError) as exc:
            fetch_manbyo(tmp_path / "none", urls=urls[:1], timeout=5)
        assert "404" in str(exc.value) and "manbyo-dic" in str(exc.value)
    finally:
        server.shutdown()


def test_fake_zip_is_a_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / "MANBYO_202106.zip"
    fake.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(ManbyoFormatError, match=r"MANBYO_202106\.zip: not a readable zip archive"):
        load_manbyo(fake)


def test_sources_are_file_names(tmp_path: Path) -> None:
    path = write(tmp_path, "AMI,,I219,急性心筋梗塞,A,\n")
    [entry] = load_manbyo(path)
    assert entry.source == "m.csv" and entry.to_record()["metadata"]["source"] == "m.csv"


def test_levels_that_keep_nothing_say_why(tmp_path: Path) -> None:
    path = write(tmp_path, "AMI,,I219,急性心筋梗塞,,\nHT,,I10,高血圧症,,\n")
    with pytest.raises(ManbyoFormatError, match="keeps none of its 2 rows"):
        load_manbyo(path, levels=["S", "A"])
