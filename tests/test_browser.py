"""`talkinghead app` in a real browser: headless Chromium (Debian's `chromium`) driven by
Selenium through Debian's `chromium-driver`, with Chromium's fake camera fed from a clip the
package can make by itself (the astronaut avatar driven by the bundled landmark track, see
conftest's ``rendered_driver``) converted to y4m. Skips, saying why, when the browser, its
driver or selenium is missing."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

INSTALL = ("install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver) "
           'and selenium (pip install -e ".[test]")')


def _find(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser_paths():
    pytest.importorskip("selenium", reason=f"browser tests need selenium: {INSTALL}")
    chromium = _find("chromium", "chromium-browser")
    driver = _find("chromedriver")
    if chromium is None or driver is None:
        pytest.skip(f"browser tests need headless Chromium and its driver: {INSTALL}")
    return chromium, driver


def _to_y4m(clip: Path, out: Path, frames: int = 75) -> Path:
    """The clip's first ``frames`` frames as raw 4:2:0 y4m (what Chromium's fake camera reads)."""
    import av

    from talkinghead.data.video import iter_frames

    container = av.open(str(out), "w", format="yuv4mpegpipe")
    stream = container.add_stream("rawvideo", rate=25)
    first = True
    for image in iter_frames(clip, max_frames=frames):
        if first:
            stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
            first = False
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return out


def _start_app(extra=()):
    proc = subprocess.Popen([sys.executable, "-m", "talkinghead.cli", "app", "--port", "0", "--threads", "1", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = proc.stdout.readline()
    if "talkinghead app at http://" not in line:
        proc.kill()
        pytest.fail(f"the app did not start: {line}{proc.stdout.read()}")
    return proc, line.split(" at ")[1].split()[0].rstrip("/")


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def app_url():
    """`talkinghead app` in a subprocess, on a free port."""
    proc, url = _start_app()
    yield url
    _stop(proc)


@pytest.fixture
def browser(browser_paths, rendered_driver, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = browser_paths
    camera = _to_y4m(rendered_driver, tmp_path / "camera.y4m")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-video-capture={camera}", "--window-size=1200,900"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    web = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    web.downloads = downloads
    try:
        yield web
    finally:
        web.quit()


def _wait(predicate, timeout: float, what: str, web=None):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    errors = ""
    if web is not None:
        errors = " | ".join(e.text for e in web.find_elements("css selector", ".error") if e.text)
    raise AssertionError(f"timed out waiting for {what}; errors shown in the page: {errors or 'none'}")


def _build_avatar(web, app_url, tmp_path, size: str = "") -> None:
    import cv2
    from skimage import data

    photo = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    web.get(app_url + "/")
    _wait(lambda: web.find_element("id", "main").is_displayed(), 30, "the page's session", web)
    web.find_element("id", "photos").send_keys(str(photo))
    if size:
        web.execute_script(f"document.getElementById('size').value = '{size}'")
    web.find_element("id", "build").click()
    _wait(lambda: web.find_element("id", "avatar-done").is_displayed(), 180, "the avatar", web)


def _picture(web, element_id: str) -> np.ndarray:
    """What an <img> of the page shows, as (H, W, 3) BGR at its own resolution."""
    import cv2

    png = web.execute_script(f"""
        const img = document.getElementById('{element_id}');
        const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
        c.getContext('2d').drawImage(img, 0, 0); return c.toDataURL('image/png');""")
    return cv2.imdecode(np.frombuffer(base64.b64decode(png.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)


def test_live_tab_renders_webcam_frames_with_a_face(browser, app_url, tmp_path):
    import cv2

    from talkinghead.data.landmarks import get_detector

    web = browser
    _build_avatar(web, app_url, tmp_path)
    _wait(lambda: web.execute_script("return document.getElementById('avatar-still').naturalWidth") > 0, 30,
          "the avatar's still", web)
    shown = web.execute_script("return document.getElementById('avatar-still').naturalWidth")
    web.find_element("id", "tab-live").click()
    web.find_element("id", "live-start").click()
    _wait(lambda: web.execute_script("return window.liveStats.frames") >= 10, 120, "10 live frames", web)
    time.sleep(3)  # a few more seconds of live driving
    stats = web.execute_script("return window.liveStats")
    image = _picture(web, "live-view")
    web.find_element("id", "live-stop").click()
    print(f"live tab in headless Chromium: {stats['fps']:.1f} frames/s, {stats['latencyMs']} ms round trip, "
          f"{stats['frames']} frames, {stats['dropped']} dropped")
    assert stats["frames"] >= 10 and stats["face"] in ("ok", "lost"), stats
    # The live tab's default size is the avatar's output size: the photo's face resolution, above
    # the network's 128 px for the astronaut.
    assert shown > 128 and image.shape == (shown, shown, 3)
    faces = get_detector("dlib").detect_faces(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    assert len(faces) >= 1, "dlib finds no face in the rendered live frame"


def test_avatar_is_shown_and_expression_sliders_render(browser, app_url, tmp_path):
    web = browser
    _build_avatar(web, app_url, tmp_path, size="256")
    for element in ("avatar-still", "avatar-turn"):
        _wait(lambda: web.execute_script(f"return document.getElementById('{element}').naturalWidth") == 256, 30,
              element, web)
    still = _picture(web, "avatar-still")
    assert still.shape == (256, 256, 3) and still.std() > 20
    before = web.execute_script("return window.expressionRenders")
    slider = web.find_element("id", "x-eyes")
    web.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'))", slider)
    _wait(lambda: web.execute_script("return window.expressionRenders") > before, 30, "the expression", web)
    time.sleep(0.5)
    closed = _picture(web, "expression-view")
    assert closed.shape == (256, 256, 3)
    assert np.abs(closed.astype(int) - still.astype(int)).mean() > 1  # the eyes closed


def test_driving_video_downloads_mp4_with_audio(browser, app_url, rendered_driver, tmp_path):
    import av

    from talkinghead.data.video import read_frames

    web = browser
    _build_avatar(web, app_url, tmp_path)
    web.find_element("id", "tab-video").click()
    web.find_element("id", "driving").send_keys(str(rendered_driver))
    web.find_element("id", "side-by-side").click()
    web.find_element("id", "render").click()
    _wait(lambda: web.find_element("id", "video-done").is_displayed(), 240, "the rendered video", web)
    web.find_element("id", "video-download").click()
    done = _wait(lambda: [p for p in web.downloads.glob("*.mp4")], 60, "the download", web)
    video = done[0]
    _wait(lambda: not list(web.downloads.glob("*.crdownload")), 30, "the download to finish", web)
    frames = read_frames(video)
    assert len(frames) == 48
    assert frames.shape[2] > frames.shape[1]  # side by side: wider than tall
    with av.open(str(video)) as container:
        assert container.streams.audio, "the downloaded mp4 has no audio"
        audio_frames = sum(1 for _ in container.decode(audio=0))
    assert audio_frames > 10


def test_page_asks_for_the_access_token(browser):
    proc, url = _start_app(["--token", "open-sesame-1234"])
    try:
        web = browser
        web.get(url + "/")
        _wait(lambda: web.find_element("id", "login").is_displayed(), 30, "the token prompt", web)
        assert not web.find_element("id", "main").is_displayed()
        web.find_element("id", "token").send_keys("wrong-token-0000")
        web.find_element("id", "login-button").click()
        _wait(lambda: "wrong access token" in web.find_element("id", "login-error").text, 30, "the refusal", web)
        web.find_element("id", "token").clear()
        web.find_element("id", "token").send_keys("open-sesame-1234")
        web.find_element("id", "login-button").click()
        _wait(lambda: web.find_element("id", "main").is_displayed(), 30, "the app after the token", web)
    finally:
        _stop(proc)
