"""The reviewer's HTML of the demo, in Japanese and in English, read as a reviewer would: the findings
box first, every number in it taken from the result files, one language per page, no code, no error
output, every chart present (and drawn with every glyph)."""
from __future__ import annotations

import html as htmllib
import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from cskit import narrative as N

ROOT = Path(__file__).resolve().parents[1]
JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff01-\uff5e]")
# words of English prose: three or more words in a row, at least two of them lower-case words
ENGLISH_RUN = re.compile(r"\b[A-Za-z][a-z']+(?:[ ,;:]+[a-z][a-z']+){2,}\b")
CHARTS = 8  # MRR bridge, forest plots, potential, score points + tiers, churn rates, cohorts, survival, calibration


@pytest.fixture(scope="module", params=["ja", "en"])
def report(request, tmp_path_factory):
    from cskit.cli import run_client

    lang = request.param
    root = tmp_path_factory.mktemp(f"report-{lang}")
    text = (ROOT / "params" / "demo.yaml").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^language: .*$", f"language: {lang}", text)
    text = re.sub(r"(?m)^bootstrap: .*$", "bootstrap: 40", text)
    text = text.replace("data: data/demo", f"data: {ROOT / 'data' / 'demo'}")
    params = root / "demo.yaml"
    params.write_text(text, encoding="utf-8")
    res = run_client(str(params), str(root / "out"))
    assert res.code == 0, res.message
    folder = Path(res.folder)
    page = (folder / "diagnosis.html").read_text(encoding="utf-8")
    return lang, folder, page, nbformat.read(str(folder / "diagnosis.ipynb"), as_version=4)


def visible_text(page: str) -> str:
    body = re.sub(r"<(style|script)\b.*?</\1>", " ", page, flags=re.S)
    body = re.sub(r"<img\b[^>]*>", " ", body)
    body = body.split("<body", 1)[1]
    return htmllib.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


def findings_items(page: str) -> list[str]:
    box = page.split('class="cskit-findings"', 1)[1].split("</div>", 1)[0]
    return [htmllib.unescape(re.sub(r"<[^>]+>", "", li)) for li in re.findall(r"<li>(.*?)</li>", box, flags=re.S)]


def test_the_findings_box_comes_first(report):
    lang, _, page, _ = report
    body = page.split("<body", 1)[1]
    box = body.index('class="cskit-findings"')
    title = body.index("<h1")
    first_section = body.index("<h2", box + len('class="cskit-findings"') + 200)
    assert title < box < first_section
    items = findings_items(page)
    assert 3 <= len(items) <= 5


def allowed_numbers(folder: Path, lang: str) -> set[str]:
    """Every number the findings box may print, formatted from the result files."""
    results = folder / "results"
    R = N.read_results(results)
    out = {"1", "10", "12", "95"}  # +1 SD, the improvement %, the horizon, 95% intervals (the params)
    d = R["drivers"]
    out |= {N.ratio(x) for x in d["effect"].dropna()}
    p = R["potential"]
    for col in ("d_ltv", "d_ltv_lo", "d_ltv_hi"):
        out |= {N._yen(x, "JPY", lang) for x in p[col].dropna()}
    v = R["health_validation"]["validation"]
    out |= {f"{v['score'][k]:.2f}" for k in ("auc", "ci_low", "ci_high")}
    if v.get("client_score", {}).get("auc") is not None:
        out.add(f"{v['client_score']['auc']:.2f}")
    scores = R["health_scores"]
    out |= {f"{len(scores):,}", f"{int((scores['tier'] == 'red').sum()):,}"}
    book = R["playbook"]
    red = book[book["tier"] == "red"] if "tier" in book else book  # the playbook also lists falling accounts
    out |= {f"{int(n):,}" for n in red["kpi_1"].value_counts()}
    q = json.loads((results / "quality.json").read_text(encoding="utf-8"))
    out |= {f"{sum(t['read'] for t in q['tables'].values()):,}"}
    return out


def test_every_number_in_the_findings_comes_from_the_result_files(report):
    lang, folder, page, _ = report
    items = findings_items(page)
    allowed = allowed_numbers(folder, lang)
    text = " ".join(items)
    # amounts first (1.75億円, 9,901万円, ¥174.7M), then the other numbers
    amounts = re.findall(r"-?\d[\d,]*(?:\.\d+)?(?:億円|万円|円)|-?[¥$€£]\d[\d,]*(?:\.\d+)?[KMB]?", text)
    rest = re.sub(r"-?\d[\d,]*(?:\.\d+)?(?:億円|万円|円)|-?[¥$€£]\d[\d,]*(?:\.\d+)?[KMB]?", " ", text)
    numbers = re.findall(r"(?<![\d.,A-Za-z])\d[\d,]*(?:\.\d+)?", rest)
    assert amounts and numbers
    assert not [a for a in amounts if a not in allowed]
    assert not [n for n in numbers if n not in allowed]
    # and the headline facts are there: the red-tier count and the validated AUC
    scores = pd.read_csv(folder / "results" / "health_scores.csv")
    v = json.loads((folder / "results" / "health_validation.json").read_text(encoding="utf-8"))["validation"]
    assert f"{int((scores['tier'] == 'red').sum()):,}" in text and f"{v['score']['auc']:.2f}" in text
    best = N.credible_gains(pd.read_csv(folder / "results" / "potential.csv")).iloc[0]
    assert N._yen(best["d_ltv"], "JPY", lang) in text


def test_one_language_per_page(report):
    lang, folder, page, _ = report
    text = visible_text(page)
    if lang == "en":  # the client's own account names (company_name) may be Japanese
        names = pd.read_csv(ROOT / "data" / "demo" / "accounts.csv", dtype=str)["company_name"].dropna()
        for name in sorted(set(names), key=len, reverse=True):
            text = text.replace(name, " ")
        assert not JAPANESE.findall(text), JAPANESE.findall(text)[:20]
        return
    kpis = pd.read_csv(folder / "results" / "drivers.csv")["kpi"].unique()  # client-supplied names may be English
    found = [m for m in ENGLISH_RUN.findall(text) if not any(k in m for k in kpis)]
    assert not found, found[:20]


def test_no_code_no_error_output_every_chart(report):
    lang, _, page, nb = report
    assert "cskit.analyse" not in page and 'class="jp-InputArea' not in page and "Traceback" not in page
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    streams = [o.get("text", "") for o in outputs if o.output_type == "stream"]
    assert not [s for s in streams if s.strip()], streams[:3]  # no warning text (e.g. "Glyph missing")
    assert page.count("data:image/png;base64") >= CHARTS
    assert f'<html lang="{lang}">' in page
    for raw in ("decision_maker", "contract_type", "q < alpha", "snake_case", "nan", "None"):
        assert not re.search(rf"(?<![\w/.]){re.escape(raw)}(?![\w.])", visible_text(page)), raw


def test_the_main_body_is_short_and_the_appendix_after_it(report):
    """The body (up to the appendix) holds only the sections a reviewer reads in order; the full
    tables come after."""
    lang, _, page, _ = report
    body = page.split("<body", 1)[1]
    appendix = body.index("付録" if lang == "ja" else "Appendix")
    main = body[:appendix]
    assert main.count("data:image/png;base64") == 4  # bridge, forest, potential, score
    assert main.count("<tr>") < 60  # the 84-row triggers table and the full potential table are in the appendix
    heads = re.findall(r"<h2[^>]*>(.*?)<", main)
    assert [h.strip()[:2] for h in heads if h.strip()[:1].isdigit()] == ["1.", "2.", "3.", "4.", "5.", "6."]


def test_the_score_history_and_movers_are_shown(report):
    """The demo's score history is made (health_history.csv rows): its section, the movers and the
    two history charts are in the report (the notebook once asked for a status word the history no
    longer used, and the section silently vanished)."""
    lang, folder, page, _ = report
    hist = pd.read_csv(folder / "results" / "health_history.csv")
    assert len(hist) > 0
    text = visible_text(page)
    for key in ("history", "movers"):
        assert N.heading(key, lang, 3).lstrip("# ") in text, key
    assert page.count("data:image/png;base64") >= CHARTS + 2  # tier mix and score bands in the appendix
