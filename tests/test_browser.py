"""The page of `aiaic serve` in a real headless browser (Debian's chromium and chromedriver,
through selenium): a photo and its sound are uploaded through the form, the coloured result and
r appear beside the grey input; a text file named .png gets the error message on the page.

Outside `make test` for now (`make test-browser`, marker `browser`): the suite is near its CI
budget. `make test-browser` installs chromium and chromedriver with apt-get when they are
missing. AIAIC_SCREENSHOT=PATH saves the page with its result (README's docs/serve.png).
"""

import base64
import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from tests import media_factory, serving

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail("chromium and chromedriver are needed (make test-browser installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1000,760"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    with serving.tiny_server(root) as url:
        yield url, root


def _submit(browser, url, picture, sound=None):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    browser.find_element(By.ID, "picture").send_keys(str(picture))
    if sound is not None:
        browser.find_element(By.ID, "sound").send_keys(str(sound))
    browser.find_element(By.ID, "go").click()
    WebDriverWait(browser, 120).until(
        lambda b: (
            not b.find_element(By.ID, "status").text
            and (
                b.find_element(By.ID, "error").text
                or expected_conditions.visibility_of_element_located((By.ID, "pair"))(b)
            )
        )
    )
    return By


def _data_image(source):
    assert source.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))))


def test_a_photo_and_its_sound_come_back_coloured_with_r(browser, page):
    url, root = page
    photo, sound = root / "street.png", root / "street.wav"
    media_factory.save_image(photo, media_factory.colourful_image((64, 48), seed=5))
    media_factory.audio_file(sound, media_factory.tone(0.5, 22050)[:, 0], 22050)
    by = _submit(browser, url, photo, sound)
    assert browser.find_element(by.ID, "error").text == ""
    grey = _data_image(browser.find_element(by.ID, "input").get_attribute("src"))
    result = _data_image(browser.find_element(by.ID, "result").get_attribute("src"))
    assert grey.shape == result.shape == (48, 64, 3)
    assert np.ptp(grey.astype(int), axis=-1).max() <= 1
    assert np.abs(result.astype(int) - grey).max() > 5
    r = float(browser.find_element(by.ID, "r").text)
    assert 0 < r < 1
    assert browser.find_element(by.ID, "download").get_attribute("href").startswith("data:image")
    if os.environ.get("AIAIC_SCREENSHOT"):
        browser.save_screenshot(os.environ["AIAIC_SCREENSHOT"])


def test_a_text_file_named_png_gets_the_message_on_the_page(browser, page):
    url, root = page
    fake = media_factory.text_file(root / "fake.png")
    by = _submit(browser, url, fake)
    assert "not a readable image" in browser.find_element(by.ID, "error").text
    assert not browser.find_element(by.ID, "pair").is_displayed()
