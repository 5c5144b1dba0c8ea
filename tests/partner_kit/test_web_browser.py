"""The prediction page in a real browser: `partner-kit serve` on loopback, driven by headless Chromium (Selenium).

Submits three SMILES (one invalid), reads the table back, checks its values equal `partner-kit predict`'s for the
same molecules, filters and sorts it, and opens one molecule's detail view. Screenshots go to $PREDICT_SCREENSHOTS
when set (docs/prediction.md uses them), else to the test's tmp dir.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from chem_helpers import ASPIRIN, chem_model  # noqa: F401  (session fixture)

CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.skipif(CHROMEDRIVER is None, reason="chromedriver not installed (apt-get install chromium "
                                                    "chromium-driver; .ci/run does)"),
]
MOLECULES = [(ASPIRIN, "aspirin"), ("Cc1ccc([N+](=O)[O-])cc1N", "nitrotoluidine"), ("C1CC1C(=O", "broken")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def partner_kit(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("partner-kit")
    return [str(script), *args] if script.exists() else [sys.executable, "-c",
                                                         "from partner_kit.cli import app; app()", *args]


@pytest.fixture(scope="module")
def server(chem_model, tmp_path_factory):  # noqa: F811
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(partner_kit("serve", "--model", str(chem_model["model"]), "--key",
                                            str(chem_model["key"]), "--prepared", str(chem_model["prepared"]),
                                            "--port", str(port)),
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"partner-kit serve did not come up: {log.read_text()[-2000:]}")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium:
        options.binary_location = chromium
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


@pytest.fixture
def shots(tmp_path) -> Path:
    target = Path(os.environ.get("PREDICT_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


def full_page_screenshot(browser, path: Path) -> None:
    """The whole page, not just the window: grow the (headless) window to the document's height first."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(int(height) + 40, 4000))
    browser.save_screenshot(str(path))
    browser.set_window_size(1400, 1000)


def cli_table(model: dict, tmp_path: Path) -> pd.DataFrame:
    smi = tmp_path / "three.smi"
    smi.write_text("".join(f"{s} {n}\n" for s, n in MOLECULES))
    out = tmp_path / "cli.csv"
    subprocess.run(partner_kit("predict", "--model", str(model["model"]), "--key", str(model["key"]), "--prepared",
                               str(model["prepared"]), "--input", str(smi), "--out", str(out)),
                   check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    return pd.read_csv(out, keep_default_na=False)


def test_page_in_a_browser_matches_the_cli_and_opens_a_detail_view(server, browser, chem_model, tmp_path,  # noqa: F811
                                                                   shots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    expected = cli_table(chem_model, tmp_path)
    wait = WebDriverWait(browser, 60)
    browser.get(server)
    box = browser.find_element(By.ID, "smiles")
    box.send_keys("\n".join(f"{s} {n}" for s, n in MOLECULES))
    browser.find_element(By.ID, "predict").click()
    wait.until(ec.presence_of_element_located((By.ID, "results")))
    rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
    assert [int(r.get_attribute("data-row")) for r in rows] == [1, 2, 3]

    labels = [th.get_attribute("data-task") for th in browser.find_elements(By.CSS_SELECTOR, "#results th[data-task]")]
    assert labels == ["assay 100 >= 6", "assay 101 >= 6", "assay 102 value"]
    for row, (_, cli) in zip(rows, expected.iterrows(), strict=True):
        assert row.find_element(By.CSS_SELECTOR, "td.standardized").text == cli["standardized_smiles"]
        errors = row.find_elements(By.CSS_SELECTOR, "div.error")
        if cli["error"]:
            assert len(errors) == 1 and errors[0].text == cli["error"]
            continue
        assert not errors
        assert row.find_element(By.CSS_SELECTOR, "td.similarity").text == f"{float(cli['max_similarity_to_training'])}"
        for cell in row.find_elements(By.CSS_SELECTOR, "td.task"):
            label = cell.get_attribute("data-task")
            assert float(cell.get_attribute("data-value")) == pytest.approx(float(cli[label]), abs=1e-9)
            if not label.endswith(" value"):
                assert cell.get_attribute("data-set") == cli[f"{label} set"]
                assert cli[f"{label} set"] in cell.text
    assert rows[0].find_elements(By.TAG_NAME, "svg") and not rows[2].find_elements(By.TAG_NAME, "svg")
    full_page_screenshot(browser, shots / "prediction_table.png")

    # filter by task name: only the matching assay's column stays visible
    browser.find_element(By.ID, "task-filter").send_keys("101")
    visible = [c.get_attribute("data-task") for c in browser.find_elements(By.CSS_SELECTOR, "#results [data-task]")
               if c.is_displayed()]
    assert set(visible) == {"assay 101 >= 6"}
    browser.find_element(By.ID, "task-filter").clear()
    browser.execute_script("document.getElementById('task-filter').dispatchEvent(new Event('input'))")

    # sort by the nitro task, descending: the nitro compound comes first, the failed row last
    header = browser.find_element(By.CSS_SELECTOR, "#results th[data-task='assay 100 >= 6']")
    header.click()
    header.click()
    order = [int(r.get_attribute("data-row")) for r in browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")]
    assert order == [2, 1, 3]

    # click the nitro compound's row: its detail view with contribution maps and measured neighbours
    browser.find_element(By.CSS_SELECTOR, "#results tbody tr[data-row='2'] td.standardized").click()
    wait.until(ec.presence_of_element_located((By.ID, "maps")))
    assert browser.find_element(By.ID, "input-smiles").text == MOLECULES[1][0]
    maps = browser.find_elements(By.CSS_SELECTOR, "#maps .map img")
    assert len(maps) == 3
    wait.until(lambda b: all(b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", m)
                             for m in maps))
    neighbours = browser.find_elements(By.CSS_SELECTOR, "#neighbours tbody tr")
    assert len(neighbours) == 5
    sims = [float(r.find_element(By.CSS_SELECTOR, "td.similarity").text) for r in neighbours]
    assert sims == sorted(sims, reverse=True) and sims[0] > 0.2
    measurements = {m.text for m in browser.find_elements(By.CSS_SELECTOR, "#neighbours td.measurement")}
    assert measurements & {"active", "inactive"}
    full_page_screenshot(browser, shots / "prediction_detail.png")
