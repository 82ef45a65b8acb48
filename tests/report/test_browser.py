"""The example's `policyc report` page in a real browser (headless Chromium): the matrices render
with sticky headers, the filters and the search work from the keyboard, and a cell's rule link
leads to the rule's entry, which names the file and line the rule is written at.

In CI a missing browser fails the run (a skipped browser test proves nothing)."""

import os
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from policyc.pipeline import load_and_check
from policyc.report import build
from tests.report.browser import BrowserUnavailable, chrome

EXAMPLE = Path(__file__).parents[2] / "envoy_configs" / "examples" / "backstage"


@pytest.fixture(scope="module")
def browser():
    try:
        with chrome() as driver:
            yield driver
    except BrowserUnavailable as error:
        if os.environ.get("CI"):
            pytest.fail(str(error))
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    pipeline = load_and_check([str(EXAMPLE)])
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(build(pipeline, [str(EXAMPLE)]), encoding="utf-8")
    return path


@pytest.fixture
def driver(browser, page):
    browser.get(page.as_uri())
    return browser


def _table(driver, service: str):
    return driver.find_element(By.CSS_SELECTOR, f'table.matrix[data-service="{service}"]')


def _visible_rows(table) -> list[str]:
    return [tr.get_attribute("data-caller") for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")
            if tr.is_displayed()]


def _visible_columns(table) -> list[str]:
    return [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th[data-col]") if th.is_displayed()]


def test_the_matrices_render(driver):
    assert [t.get_attribute("data-service") for t in driver.find_elements(By.CSS_SELECTOR, "table.matrix")] == [
        "docs", "ledger", "payments"]
    payments = _table(driver, "payments")
    assert len(_visible_columns(payments)) == 8
    rows = _visible_rows(payments)
    assert rows[:2] == ["no token, no certificate", "certificate from trust mesh"]
    assert "group:default/sre" in rows and "user:default/alice" in rows
    cells = payments.find_elements(By.CSS_SELECTOR, "td.cell")
    assert len(cells) == 8 * len(rows)
    assert {c.get_attribute("data-verdict") for c in cells} == {"always", "sometimes", "never"}
    header = payments.find_element(By.CSS_SELECTOR, "thead th")
    assert header.value_of_css_property("position") == "sticky"
    assert driver.find_element(By.CSS_SELECTOR, "#service-0 .badge.dry-run").text == "dry-run"


def test_filters_rows_by_caller_and_kind(driver):
    driver.find_element(By.ID, "filter-callers").send_keys("sre")
    for service in ("docs", "ledger", "payments"):
        assert _visible_rows(_table(driver, service)) == ["group:default/sre"]
    driver.find_element(By.ID, "filter-callers").clear()
    driver.find_element(By.ID, "filter-callers").send_keys(" ")  # an input event with an empty filter
    Select(driver.find_element(By.ID, "filter-kind")).select_by_value("user")
    assert _visible_rows(_table(driver, "payments")) == [f"user:default/{u}" for u in ("alice", "bob", "carol", "dave")]


def test_filters_columns_by_path(driver):
    driver.find_element(By.ID, "filter-endpoints").send_keys("healthz")
    payments = _table(driver, "payments")
    assert _visible_columns(payments) == ['any method == "/healthz"\ne.g. /healthz']
    shown = [td for td in payments.find_elements(By.CSS_SELECTOR, "td.cell") if td.is_displayed()]
    assert len(shown) == len(_visible_rows(payments))


def test_a_cell_links_to_its_rule(driver):
    source = EXAMPLE / "payments.policy"
    line = source.read_text().split("\n").index('    allow public "health" when path == "/healthz"') + 1
    payments = _table(driver, "payments")
    column = next(th.get_attribute("data-col") for th in payments.find_elements(By.CSS_SELECTOR, "thead th[data-col]")
                  if "/healthz" in th.text)
    anonymous = 'tr[data-caller="no token, no certificate"]'
    cell = payments.find_element(By.CSS_SELECTOR, f'{anonymous} td[data-col="{column}"]')
    assert cell.get_attribute("data-verdict") == "always"
    link = cell.find_element(By.CSS_SELECTOR, "a.rule-link")
    assert link.text == "health"
    assert link.get_attribute("data-file") == str(source) and link.get_attribute("data-line") == str(line)
    link.click()
    target = driver.switch_to.active_element
    assert "#" + target.get_attribute("id") == link.get_attribute("href")[link.get_attribute("href").index("#"):]
    assert target.get_attribute("data-file") == str(source) and target.get_attribute("data-line") == str(line)
    assert target.find_element(By.CSS_SELECTOR, ".where").text == f"{source}:{line}"
    assert 'allow public "health" when path == "/healthz"' in target.find_element(By.CSS_SELECTOR, "pre").text


def test_search(driver):
    driver.find_element(By.ID, "search").send_keys("contractor")
    rules = [li.find_element(By.TAG_NAME, "strong").text for li in driver.find_elements(By.CSS_SELECTOR, "li.rule")
             if li.is_displayed()]
    assert rules == ["deny no-contractor-writes"]
    assert driver.find_element(By.ID, "search-count").text.startswith("1 of ")


def test_the_filters_are_reachable_by_keyboard(driver):
    reached = []
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    for _ in range(20):
        reached.append(driver.switch_to.active_element.get_attribute("id"))
        driver.switch_to.active_element.send_keys(Keys.TAB)
    filters = [r for r in reached if r in ("filter-callers", "filter-kind", "filter-endpoints", "search")]
    assert filters == ["filter-callers", "filter-kind", "filter-endpoints", "search"]
    assert driver.find_element(By.ID, "filter-callers").get_attribute("aria-describedby") == "filter-callers-help"
