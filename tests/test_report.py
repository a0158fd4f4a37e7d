"""The listening and analysis page (python -m s5lib.bin.report) on a tiny scored test set."""
import base64
import csv
import io
import json
import os
import shutil
import subprocess
import wave
from html.parser import HTMLParser

import pytest

from s5lib.bin.report import ReportError, build_report, main as report_main
from s5lib.bin.score import score


class Page(HTMLParser):
    """Tags, attributes and text of a page, for structure checks."""

    def __init__(self, text):
        super().__init__()
        self.tags, self.text, self.classes = [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        self.classes += (attrs.get("class") or "").split()

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag):
        return [attrs for name, attrs in self.tags if name == tag]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A tiny test set, scored twice: estimates = the references with one label swapped and one
    source missing (A), and the references themselves (B)."""
    from s5lib.bin.prep_data import main as prep_data
    root = tmp_path_factory.mktemp("report")
    data = root / "data"
    prep_data(["--out_dir", str(data), "--size", "tiny", "--n_valid", "1", "--n_test", "5",
               "--nj", "1", "--year", "2026"])
    test_dir = json.loads((data / "dataset.json").read_text())["test_dir"]
    refs = sorted(os.listdir(os.path.join(test_dir, "oracle_target")))
    dirs = {}
    for name in ("A", "B"):
        est = root / name / "estimates"
        est.mkdir(parents=True)
        for i, ref in enumerate(refs):
            if name == "A" and i == 0:
                continue  # a missed source
            shutil.copy(os.path.join(test_dir, "oracle_target", ref), est / ref)
        out = root / name / "scores"
        score({"year": 2026, "ref_dir": test_dir, "est_dir": str(est), "out_dir": str(out),
               "nj": 1, "plot": False, "tag": name})
        dirs[name] = out
    return dirs, test_dir


def test_report_page_structure(scored, tmp_path):
    dirs, test_dir = scored
    out = tmp_path / "report.html"
    info = build_report([str(dirs["A"])], str(out), n=1, seed=0)
    text = out.read_text()
    page = Page(text)
    headings = [t.strip() for t in page.text]
    for heading in ("Summary", "Diagnostics", "Listening", "Commands"):
        assert heading in headings
    assert info["mixtures_shown"] == 3 and info["n_mixtures"] == 5
    # every source is embedded: no file or server needed
    for tag in ("audio", "img"):
        for attrs in page.all(tag):
            assert attrs["src"].startswith("data:"), attrs["src"][:40]
    sections = page.classes.count("mix")
    assert sections == 3
    # one player per mixture, reference and estimate of the shown mixtures
    per_source = list(csv.DictReader(open(dirs["A"] / "per_source.csv")))
    shown = [t for _, attrs in page.tags for t in [attrs.get("alt", "")] if t]
    assert len(page.all("audio")) == len(page.all("img")) == len(shown)
    mixtures = {row["mixture"] for row in per_source}
    assert sum(m in "".join(page.text) for m in mixtures) == 3
    # the embedded audio is a 16 kHz, 10 s WAV
    data = base64.b64decode(page.all("audio")[0]["src"].split(",", 1)[1])
    with wave.open(io.BytesIO(data)) as w:
        assert w.getframerate() == 16000 and w.getnframes() == 160000
    # the diagnostics: CASA-SDRi beside the official metric, the per-class bars, confusions
    assert "CASA-SDRi (not official)" in text and "By number of targets" in text
    assert len(page.all("svg")) == 3 and "Confusions" in text
    assert "FN: no estimate" in text  # the missed source


def test_report_compares_experiments_on_the_same_mixtures(scored, tmp_path):
    dirs, _ = scored
    out = tmp_path / "cmp.html"
    build_report([str(dirs["A"]), str(dirs["B"])], str(out), n=1, seed=0)
    page = Page(out.read_text())
    assert page.classes.count("exp") == 2 * page.classes.count("mix")
    assert " vs " in "".join(page.text)


def test_report_stays_under_its_size_bound(scored, tmp_path):
    dirs, _ = scored
    out = tmp_path / "small.html"
    info = build_report([str(dirs["A"])], str(out), n=2, seed=0, max_mb=1.2)
    assert os.path.getsize(out) <= 1.2 * 2 ** 20
    assert 0 < info["mixtures_shown"] < info["mixtures_chosen"]
    assert "left out to stay under 1.2 MB" in out.read_text()


def test_report_refusals(scored, tmp_path):
    dirs, _ = scored
    with pytest.raises(ReportError, match="no summary.json"):
        build_report([str(tmp_path)], str(tmp_path / "x.html"))
    other = tmp_path / "other"
    shutil.copytree(dirs["B"], other)
    rows = list(csv.DictReader(open(other / "per_mixture.csv")))
    with open(other / "per_mixture.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[:-1])
    with pytest.raises(ReportError, match="test set differs"):
        build_report([str(dirs["A"]), str(other)], str(tmp_path / "y.html"))
    assert report_main(["--score_dir", str(tmp_path), "--out", str(tmp_path / "z.html")]) == 1


def test_source_names_never_leave_their_folder(scored, tmp_path):
    dirs, _ = scored
    evil = tmp_path / "evil"
    shutil.copytree(dirs["A"], evil)
    rows = list(csv.DictReader(open(evil / "per_source.csv")))
    for row in rows:
        if row["est_name"]:
            row["est_name"] = "../../" + row["est_name"]
    with open(evil / "per_source.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "evil.html"
    build_report([str(evil)], str(out), n=1)
    assert "audio not found" in out.read_text()


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed")
def test_report_opens_in_headless_chromium(scored, tmp_path):
    dirs, _ = scored
    out = tmp_path / "report.html"
    build_report([str(dirs["A"]), str(dirs["B"])], str(out), n=1)
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                    "--window-size=1400,2000", f"--screenshot={shot}", out.as_uri()],
                   check=True, timeout=120, capture_output=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20000


def test_benchmark_runs_on_a_small_set(capsys):
    from s5lib.bin.bench_report import main as bench
    assert bench(["--n_mixtures", "30", "--n", "1"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("30 mixtures (2026): diagnostics") and "3 mixtures shown" in printed


def test_compare_writes_the_page_side_by_side(scored, tmp_path, capsys):
    from s5lib.bin.compare import main as compare
    dirs, _ = scored
    out = tmp_path / "cmp.html"
    assert compare(["--results", str(dirs["A"]), str(dirs["B"]), "--report", str(out),
                    "--report_mixtures", "1"]) == 0
    assert "(2 runs, 3 mixtures)" in capsys.readouterr().out
    page = Page(out.read_text())
    assert page.classes.count("exp") == 2 * page.classes.count("mix") == 6
