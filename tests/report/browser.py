"""Headless Chromium driven by Selenium, with Debian's chromium and chromium-driver (.ci/run
installs them): `chrome()` yields a WebDriver, or raises `BrowserUnavailable`."""

from __future__ import annotations

import contextlib
import shutil

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service


class BrowserUnavailable(RuntimeError):
    pass


def _binary(*names: str) -> str:
    for name in names:
        if found := shutil.which(name):
            return found
    raise BrowserUnavailable(f"none of {', '.join(names)} is installed (apt-get install chromium chromium-driver)")


@contextlib.contextmanager
def chrome(width: int = 1400, height: int = 900):
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium", "chromium-browser")
    # No sandbox: CI runs as root in a container, where Chromium's sandbox cannot start.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}", "--force-color-profile=srgb"):
        options.add_argument(argument)
    try:
        driver = webdriver.Chrome(options=options, service=Service(_binary("chromedriver")))
    except WebDriverException as error:
        raise BrowserUnavailable(f"Chromium did not start: {error.msg}") from None
    try:
        yield driver
    finally:
        driver.quit()
