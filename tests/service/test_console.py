"""The web console in a real browser: headless Chromium (Debian's package, driven by Selenium through Debian's
chromium-driver) against a real server on loopback, checked against what the API answers for the same request."""

from __future__ import annotations

import json
import math
import os
import shutil
from importlib import resources
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import Select, WebDriverWait

from braid.common.collection_writer import stage_collection
from braid.common.dataset_resolver import open_dataset_dir
from braid.pipelines.pipeline import load_pipeline
from braid.service.cli.main import main
from braid.service.core import AuthConfig, SearchCore
from tests.service.conftest import API_KEY, ServerThread

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "images" / "console-search.png"
QUERY = "how do engines make new documents searchable quickly"
# Two BM25 views fused by weighted z-scores: contributions of both signs, and no model to load.
FUSED = """
name = "two-bm25"
description = "BM25 twice (k1/b of Pyserini's BEIR runs and Lucene's defaults), z-score fused"
[[retrievers]]
name = "bm25"
kind = "bm25"
[[retrievers]]
name = "bm25-lucene"
kind = "bm25"
k1 = 1.2
b = 0.75
[fusion]
method = "weighted"
normalization = "zscore"
weights = { bm25 = 0.6, bm25-lucene = 0.4 }
"""


def _binary(name: str, *others: str) -> str | None:
    return next((found for candidate in (name, *others) if (found := shutil.which(candidate))), None)


@pytest.fixture(scope="module")
def browser():
    chromium, driver = _binary("chromium", "chromium-browser"), _binary("chromedriver")
    if chromium is None or driver is None:
        pytest.fail("the console tests need Debian's chromium and chromium-driver: scripts/test.sh installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1500"):
        options.add_argument(argument)
    session = webdriver.Chrome(options=options, service=Service(driver))
    yield session
    session.quit()


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    root = tmp_path_factory.mktemp("console")
    sample = resources.files("braid.samples") / "ir-notes.jsonl"
    folder = stage_collection("notes", Path(str(sample)), root / "collections", fields={"year": "integer"}).publish()
    fused = root / "two-bm25.toml"
    fused.write_text(FUSED)
    specs = [load_pipeline(str(fused)), load_pipeline("bm25")]
    core = SearchCore(open_dataset_dir(folder), specs, root / "indexes", auth=AuthConfig(API_KEY), build_missing=True)
    running = ServerThread(core)
    yield running
    running.stop()


def api(server, path: str, body: dict | None = None, **headers) -> dict:
    if body is None:
        response = httpx.get(f"{server.http}{path}", headers=headers, timeout=30)
    else:
        response = httpx.post(f"{server.http}{path}", json=body, headers=headers, timeout=30)
    response.raise_for_status()
    return response.json()


def open_view(browser, server, view: str) -> None:
    browser.get(f"{server.http}/#{view}")
    WebDriverWait(browser, 30).until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))


def wait_for(browser, css: str, count: int = 1):
    WebDriverWait(browser, 30).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, css)) >= count)
    return browser.find_elements(By.CSS_SELECTOR, css)


def search(browser, query: str, pipeline: str, filter_json: str = "") -> None:
    Select(browser.find_element(By.ID, "search-pipeline")).select_by_value(pipeline)
    box = browser.find_element(By.ID, "search-query")
    box.clear()
    box.send_keys(query)
    if filter_json:
        browser.find_element(By.ID, "search-filter").send_keys(filter_json)
    browser.find_element(By.CSS_SELECTOR, "#search-form button").click()


def test_the_console_ships_in_the_package_and_can_be_left_out(console):
    page = httpx.get(f"{console.http}/", timeout=10)
    assert page.status_code == 200 and "braid console" in page.text
    for asset in ("console.js", "console.css"):
        assert httpx.get(f"{console.http}/console/{asset}", timeout=10).status_code == 200
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: works offline
    assert httpx.get(f"{console.http}/console/other.js", timeout=10).status_code == 404
    assert "/" not in api(console, "/openapi.json")["paths"]
    from braid.service.http_api import create_app

    bare = create_app(console.core, console.core.list_pipelines(), console=False)
    assert not any(getattr(route, "path", "") == "/" for route in bare.routes)


def test_search_view_shows_the_apis_hits_and_explanations(browser, console, tmp_path):
    open_view(browser, console, "search")
    search(browser, QUERY, "two-bm25")
    hits = wait_for(browser, "#search-hits li.hit")
    expected = api(console, "/v1/search", {"query": QUERY, "pipeline": "two-bm25", "k": 10, "explain": True})["hits"]
    assert [hit.get_attribute("data-doc-id") for hit in hits] == [hit["doc_id"] for hit in expected]
    notes = {row["id"]: row for row in map(json.loads, (resources.files("braid.samples") / "ir-notes.jsonl").open())}
    for shown, answer in zip(hits, expected, strict=True):
        assert shown.find_element(By.CSS_SELECTOR, ".title").text == notes[answer["doc_id"]]["title"]
        rows = shown.find_elements(By.CSS_SELECTOR, "tr.retriever")
        sources = answer["explanation"]["retrievers"]
        assert [row.get_attribute("data-retriever") for row in rows] == list(sources)
        total = 0.0
        for row in rows:
            source = sources[row.get_attribute("data-retriever")]
            assert row.get_attribute("data-rank") == ("" if source["rank"] is None else str(source["rank"]))
            assert math.isclose(float(row.get_attribute("data-contribution")), source["contribution"], abs_tol=1e-12)
            total += source["contribution"]
        # The bars are the fused score's terms: they sum to it.
        assert math.isclose(total, answer["explanation"]["fused_score"], rel_tol=1e-9, abs_tol=1e-9)
    assert hits[0].find_elements(By.CSS_SELECTOR, ".snippet mark")  # the query's terms highlighted
    stages = [row.get_attribute("data-stage") for row in browser.find_elements(By.CSS_SELECTOR, ".stage")]
    assert stages == ["retriever.bm25", "retriever.bm25-lucene", "fusion", "total"]
    picture = tmp_path / "console-search.png"
    browser.save_screenshot(str(picture))
    assert picture.stat().st_size > 10_000
    if os.environ.get("BRAID_UPDATE_SCREENSHOT"):  # the README's picture, made here
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(picture, SCREENSHOT)


def test_api_errors_show_their_message(browser, console):
    open_view(browser, console, "search")
    search(browser, "vector search", "two-bm25", '{"field": "colour", "eq": "red"}')
    alert = browser.find_element(By.ID, "error")
    WebDriverWait(browser, 30).until(lambda b: alert.is_displayed())
    assert "400 INVALID_ARGUMENT" in alert.text and "colour" in alert.text
    browser.find_element(By.ID, "search-filter").clear()
    search(browser, "vector search", "two-bm25", "{year: 2020")
    WebDriverWait(browser, 30).until(lambda b: "the filter is not JSON" in alert.text)
    browser.find_element(By.ID, "search-filter").clear()
    search(browser, "vector search", "two-bm25")  # a good request clears the message
    WebDriverWait(browser, 30).until(lambda b: not alert.is_displayed())


def test_compare_view_shows_each_hits_rank_change(browser, console):
    open_view(browser, console, "compare")
    browser.find_element(By.ID, "compare-query").send_keys(QUERY)
    Select(browser.find_element(By.ID, "compare-a-pipeline")).select_by_value("bm25")
    Select(browser.find_element(By.ID, "compare-b-pipeline")).select_by_value("two-bm25")
    browser.find_element(By.CSS_SELECTOR, "#compare-form button").click()
    shown = wait_for(browser, "#compare-b li.hit")
    before = {h["doc_id"]: h["rank"] for h in api(console, "/v1/search", {"query": QUERY, "pipeline": "bm25"})["hits"]}
    after = api(console, "/v1/search", {"query": QUERY, "pipeline": "two-bm25"})["hits"]
    for item, hit in zip(shown, after, strict=True):
        old = before.get(hit["doc_id"])
        moved = None if old is None else old - hit["rank"]
        change = "new" if moved is None else "=" if moved == 0 else f"↑{moved}" if moved > 0 else f"↓{-moved}"
        assert item.get_attribute("data-doc-id") == hit["doc_id"] and item.get_attribute("data-change") == change


def test_collection_view_shows_indexes_writes_and_opens_a_document(browser, console):
    text = "A web page over the API."
    document = {"id": "console-note", "title": "Console", "text": text, "metadata": {"year": 2026}}
    api(console, "/v1/pipelines/bm25/documents", {"documents": [document]}, authorization=f"Bearer {API_KEY}")
    open_view(browser, console, "collection")
    WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "collection-name").text == "notes")
    names = [node.text for node in browser.find_elements(By.CSS_SELECTOR, "#collection-summary dt")]
    values = [node.text for node in browser.find_elements(By.CSS_SELECTOR, "#collection-summary dd")]
    facts = dict(zip(names, values, strict=True))
    assert facts["documents"] == "25" and facts["writes since the base"] == "1" and facts["fields"] == "year (integer)"
    listed = api(console, "/v1/pipelines")
    index_rows = browser.find_elements(By.CSS_SELECTOR, "#collection-indexes tr")[1:]
    assert len(index_rows) == sum(len(p["indexes"]) for p in listed["pipelines"])
    assert browser.find_elements(By.CSS_SELECTOR, "#collection-writes tr")[1].text.split() == ["1", "1", "0"]
    browser.find_element(By.ID, "document-id").send_keys("console-note")
    browser.find_element(By.CSS_SELECTOR, "#document-form button").click()
    WebDriverWait(browser, 30).until(lambda b: text in b.find_element(By.ID, "document-view").text)
    assert '"year": 2026' in browser.find_element(By.ID, "document-view").text
    browser.find_element(By.ID, "document-id").clear()
    browser.find_element(By.ID, "document-id").send_keys("no-such-note")
    browser.find_element(By.CSS_SELECTOR, "#document-form button").click()
    WebDriverWait(browser, 30).until(lambda b: "404 NOT_FOUND" in b.find_element(By.ID, "error").text)


def test_evaluation_view_reads_braid_eval_results(browser, console, tiny_beir, tmp_path, capsys):
    output = tmp_path / "results"
    arguments = ["eval", "--dataset", str(tiny_beir), "--index-dir", str(tmp_path / "indexes"), "--output", str(output)]
    assert main([*arguments, "--pipeline", "bm25", "--pipeline", "bm25-lucene", "--latency-sample", "3"]) == 0
    capsys.readouterr()
    files = [next(output.rglob(f"{name}.test.json")) for name in ("bm25", "bm25-lucene")]
    runs = [json.loads(path.read_text()) for path in files]
    open_view(browser, console, "evaluation")
    browser.find_element(By.ID, "eval-files").send_keys("\n".join(str(path) for path in files))
    rows = wait_for(browser, "#eval-metrics tr", 3)
    header = [cell.text for cell in rows[0].find_elements(By.TAG_NAME, "th")]
    for row, run in zip(rows[1:], runs, strict=True):
        cells = dict(zip(header, (cell.text for cell in row.find_elements(By.TAG_NAME, "td")), strict=True))
        assert cells["pipeline"] == run["pipeline"] and cells["ndcg@10"].startswith(f"{run['ndcg@10']:.4f}")
    left, right = (run["per_query"]["ndcg@10"] for run in runs)
    wins = sum(right[q] > left[q] for q in left)
    losses = sum(right[q] < left[q] for q in left)
    summary = browser.find_element(By.ID, "eval-wins-summary").text
    assert f"{wins} win(s), {losses} loss(es)" in summary
    assert len(browser.find_elements(By.CSS_SELECTOR, "#eval-quality-latency circle")) == 2
    (tmp_path / "broken.json").write_text("{not json")
    browser.find_element(By.ID, "eval-files").send_keys(str(tmp_path / "broken.json"))
    WebDriverWait(browser, 30).until(lambda b: "broken.json is not JSON" in b.find_element(By.ID, "error").text)


def test_a_dead_server_is_a_message_not_a_blank_page(browser, console):
    open_view(browser, console, "search")
    try:
        browser.execute_script("window.fetch = () => Promise.reject(new TypeError('Failed to fetch'));")
        search(browser, "vector search", "two-bm25")
        WebDriverWait(browser, 30).until(lambda b: "did not answer" in b.find_element(By.ID, "error").text)
    except WebDriverException as error:  # pragma: no cover - a driver failure, not the console's
        pytest.fail(str(error))
    assert ready.visibility_of_element_located((By.ID, "error"))(browser)
