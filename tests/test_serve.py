"""`aiaic serve`: the page and its answers over HTTP, with a tiny model on a free local port, and
the page in a real headless browser.

Over HTTP: photos with and without sound, a video, and uploads that must get a message, not a
crash: a text file named .png, an unknown kind of file, an unreadable sound, an upload over the
limit. In Debian's chromium through selenium (marker `browser`; `make test-browser` runs those
alone): a photo and its sound are uploaded through the form, the coloured result and r appear
beside the grey input; a text file named .png gets the error message on the page. `make test`
installs chromium and chromedriver with apt-get when they are missing and it can (root on
Debian); where they are still missing the browser tests are skipped and say so, or fail when
AIAIC_REQUIRE_BROWSER=1 (as `.ci/run` sets it). AIAIC_SCREENSHOT=PATH saves the page with its
result (README's docs/serve.png).
"""

import base64
import io
import json
import os
import shutil
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest
from PIL import Image

from tests import media_factory, serving


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    with serving.tiny_server(root) as url:
        yield url, root


def _post(url, files):
    """POST multipart/form-data; returns (status, JSON answer)."""
    boundary = uuid.uuid4().hex
    body = b""
    for field, (name, data) in files.items():
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        url + "/colorize",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _image(data_url):
    assert data_url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


def _files(root):
    photo = root / "photo.png"
    media_factory.save_image(photo, media_factory.colourful_image((48, 40), seed=5))
    sound = root / "photo.wav"
    media_factory.audio_file(sound, media_factory.tone(0.5, 22050)[:, 0], 22050)
    return photo.read_bytes(), sound.read_bytes()


def test_the_page_has_the_form(server):
    url, _ = server
    with urllib.request.urlopen(url + "/", timeout=60) as response:
        page = response.read().decode()
    assert response.status == 200 and 'name="picture"' in page and 'name="sound"' in page


def test_a_photo_with_its_sound_comes_back_coloured_beside_its_grey_input(server):
    url, root = server
    photo, sound = _files(root)
    status, answer = _post(url, {"picture": ("street.png", photo), "sound": ("street.wav", sound)})
    assert status == 200, answer
    grey, result = _image(answer["input"]), _image(answer["result"])
    assert grey.shape == result.shape == (40, 48, 3)
    assert np.ptp(grey.astype(int), axis=-1).max() <= 1  # grey
    assert np.abs(result.astype(int) - grey).max() > 5  # coloured
    assert 0 < answer["r"] < 1 and answer["has_audio"] and "note" not in answer


def test_a_photo_without_sound_says_it_used_the_visual_path(server):
    url, root = server
    photo, _ = _files(root)
    status, answer = _post(url, {"picture": ("street.png", photo)})
    assert status == 200 and answer["r"] == 0 and "visual path" in answer["note"]


def test_a_video_comes_back_as_a_link_to_the_colourised_film(server):
    url, root = server
    film = media_factory.colour_clip(root / "clip.mp4", seconds=1, fps=8, sample_rate=16000)
    with open(film, "rb") as f:
        status, answer = _post(url, {"picture": ("clip.mp4", f.read())})
    assert status == 200, answer
    assert answer["kind"] == "video" and answer["has_audio"] and "8 frames" in answer["summary"]
    with urllib.request.urlopen(url + answer["result_url"], timeout=60) as response:
        assert response.headers["Content-Type"] == "video/mp4" and len(response.read()) > 1000


@pytest.mark.parametrize(
    ("files", "status", "message"),
    [
        ({"picture": ("fake.png", b"this is text, not a picture")}, 400, "not a readable image"),
        ({"picture": ("notes.txt", b"text")}, 400, "not a photo"),
        ({}, 400, "choose a photo or a video"),
        ({"picture": ("big.png", b"\0" * 2_100_000)}, 413, "the limit is 2 MB"),
    ],
)
def test_bad_uploads_get_a_message_and_the_server_goes_on(server, files, status, message):
    url, root = server
    got, answer = _post(url, files)
    assert got == status and message in answer["error"], answer
    photo, _ = _files(root)
    assert _post(url, {"picture": ("again.png", photo)})[0] == 200


def test_an_unreadable_sound_is_named(server):
    url, root = server
    photo, _ = _files(root)
    status, answer = _post(
        url, {"picture": ("p.png", photo), "sound": ("broken.wav", b"RIFF not a sound")}
    )
    assert status == 400 and "broken.wav: not a readable sound" in answer["error"]


# ------------------------------------------------------------------------------------------------
# In a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or CHROMEDRIVER is None:
        message = "chromium and chromedriver are not installed (make test installs them as root)"
        if os.environ.get("AIAIC_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
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


@pytest.mark.browser
def test_in_a_browser_a_photo_and_its_sound_come_back_coloured_with_r(browser, server):
    url, root = server
    photo, sound = root / "street.png", root / "street.wav"
    media_factory.save_image(photo, media_factory.colourful_image((64, 48), seed=5))
    media_factory.audio_file(sound, media_factory.tone(0.5, 22050)[:, 0], 22050)
    by = _submit(browser, url, photo, sound)
    assert browser.find_element(by.ID, "error").text == ""
    grey = _image(browser.find_element(by.ID, "input").get_attribute("src"))
    result = _image(browser.find_element(by.ID, "result").get_attribute("src"))
    assert grey.shape == result.shape == (48, 64, 3)
    assert np.ptp(grey.astype(int), axis=-1).max() <= 1
    assert np.abs(result.astype(int) - grey).max() > 5
    r = float(browser.find_element(by.ID, "r").text)
    assert 0 < r < 1
    assert browser.find_element(by.ID, "download").get_attribute("href").startswith("data:image")
    if os.environ.get("AIAIC_SCREENSHOT"):
        browser.save_screenshot(os.environ["AIAIC_SCREENSHOT"])


@pytest.mark.browser
def test_in_a_browser_a_text_file_named_png_gets_the_message_on_the_page(browser, server):
    url, root = server
    fake = media_factory.text_file(root / "fake.png")
    by = _submit(browser, url, fake)
    assert "not a readable image" in browser.find_element(by.ID, "error").text
    assert not browser.find_element(by.ID, "pair").is_displayed()
