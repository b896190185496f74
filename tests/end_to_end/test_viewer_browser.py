"""The live viewer in a real browser: headless Chromium on the viser page of a running ``ns-train``.

Drives Debian's Chromium through Selenium and ChromeDriver (nothing downloads a browser). Screenshots of each
check are saved under ``$RVS_TEST_ARTIFACTS`` (default ``outputs/test-artifacts``).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, TypeVar

import numpy as np
import pytest
from PIL import Image

from rvs_nerfstudio.data.synth import SynthConfig, generate_scene
from rvs_nerfstudio.tools import presets
from tests.helpers import BIN, OFFLINE_ENV

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="Chromium is not installed: apt-get install chromium chromium-driver (make test does this on Debian)",
    ),
]
ARTIFACTS = Path(os.environ.get("RVS_TEST_ARTIFACTS", "outputs/test-artifacts"))
T = TypeVar("T")


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return generate_scene(SynthConfig(output=tmp_path_factory.mktemp("scene") / "object", resolution=32, num_train=8, num_test=2))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """Polls ``check`` until it returns something other than None or False; fails naming ``what`` after ``timeout`` s.

    A check that reads an element the page has just re-rendered (selenium's stale element) is polled again."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except StaleElementReferenceException:
            result = None
        if result is not None and result is not False:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextmanager
def training_with_viewer(method: str, scene: Path, output_dir: Path, *extra: str) -> Iterator[str]:
    """Runs ``ns-train METHOD --vis viewer`` on a loopback port; yields the viewer's URL, stops training after."""
    port = free_port()
    flags = presets.cli_args("cpu-small", method)
    log = output_dir / "ns-train.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [str(BIN / "ns-train"), method, "--data", str(scene), "--output-dir", str(output_dir), "--vis", "viewer"]
            + ["--viewer.websocket-host", "127.0.0.1", "--viewer.websocket-port", str(port)]
            + ["--max-num-iterations", "100000", *flags, *extra],
            env=OFFLINE_ENV,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"

    def serving() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"ns-train exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(serving, 300, f"the viewer at {url}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


class ViewerPage:
    """The nerfstudio viewer (viser) page in headless Chromium, read and operated by its visible labels."""

    def __init__(self, url: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--no-first-run", "--window-size=1200,800"):
            options.add_argument(argument)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.get(url)

    def close(self) -> None:
        self.driver.quit()

    def text(self) -> str:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.TAG_NAME, "body").text

    def step(self) -> int:
        """The training step the viewer shows (``Step: N``); -1 before it shows one."""
        found = re.search(r"Step: (\d+)", self.text())
        return int(found.group(1)) if found else -1

    def _row(self, label: str):
        """The GUI row whose label reads ``label``."""
        from selenium.webdriver.common.by import By

        element = self.driver.find_element(By.XPATH, f"//p[normalize-space(.)='{label}']")
        return element.find_element(By.XPATH, "./ancestor::div[contains(@class,'mantine-Flex-root')][1]")

    def has_control(self, label: str) -> bool:
        from selenium.common.exceptions import NoSuchElementException

        try:
            self._row(label)
            return True
        except NoSuchElementException:
            return False

    def number(self, label: str) -> str:
        from selenium.webdriver.common.by import By

        return self._row(label).find_element(By.XPATH, ".//input[@type='text']").get_attribute("value")

    def set_number(self, label: str, value: float) -> None:
        """Types ``value`` into the slider or number field labelled ``label`` and presses Enter."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        field = self._row(label).find_element(By.XPATH, ".//input[@type='text']")
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(str(value), Keys.ENTER)
        wait_for(lambda: field.get_attribute("value") == str(value), 10, f"{label} to read {value}")

    def select(self, label: str, option: str) -> None:
        """Opens the drop-down labelled ``label`` and clicks ``option``."""
        from selenium.webdriver.common.by import By

        self._row(label).find_element(By.TAG_NAME, "input").click()
        choices = wait_for(
            lambda: [o for o in self.driver.find_elements(By.XPATH, "//*[@role='option']")
                     if o.is_displayed() and o.get_attribute("textContent").strip() == option],
            10, f"option {option} of {label}",
        )
        choices[0].click()

    def click(self, button: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.XPATH, f"//button[normalize-space(.)='{button}']").click()

    def render(self) -> np.ndarray:
        """The 3D view's pixels ``[H, W, 3]`` (uint8): the smallest canvas, left of the control panel."""
        from selenium.webdriver.common.by import By

        canvases = self.driver.find_elements(By.TAG_NAME, "canvas")
        view = min(canvases, key=lambda canvas: canvas.size["width"])
        return np.asarray(Image.open(io.BytesIO(view.screenshot_as_png)).convert("RGB"))

    def save(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path


def changed_share(first: np.ndarray, second: np.ndarray) -> float:
    """Share of pixels whose colour moved by more than 8 of 255 levels between two renders of the same size.

    A share, not a mean over the view: a small object on a white background changes only where it is (K 8 → 1 on
    the test scene changed 8.5 % of the pixels here, while the view's mean moved by less than 2 levels on CI), and
    a view that was not rendered again is the same image, so no pixel moves at all."""
    change = np.abs(first.astype(int) - second.astype(int)).max(axis=-1)
    return float((change > 8).mean())


def is_rendered(image: np.ndarray) -> bool:
    """A non-blank render: pixel values vary over the view (a blank canvas is one flat colour)."""
    return float(image.astype(float).std()) > 3.0


def first_render(page: ViewerPage, timeout: float = 120) -> np.ndarray:
    """Waits until the view shows a non-blank render and returns it."""

    def rendered():
        image = page.render()
        return image if is_rendered(image) else None

    return wait_for(rendered, timeout, "a non-blank render")


def changed_render(page: ViewerPage, before: np.ndarray, timeout: float, what: str) -> np.ndarray:
    """Waits until the render differs visibly from ``before`` and returns it."""

    def changed():
        image = page.render()
        return image if changed_share(image, before) > 0.01 else None

    return wait_for(changed, timeout, what)


@contextmanager
def viewer_page(url: str) -> Iterator[ViewerPage]:
    page = ViewerPage(url)
    try:
        wait_for(lambda: "Connected" in page.text(), 60, "the client to report it is connected")
        wait_for(lambda: page.has_control("Max res"), 60, "the control panel")
        page.set_number("Max res", 64)  # cheap renders on a CPU
        yield page
    finally:
        page.close()


def check_depth_and_accumulation_views(page: ViewerPage, rgb: np.ndarray, method: str) -> None:
    """Switches the output type to depth, then accumulation: each renders, non-blank and unlike the one before."""
    views: List[np.ndarray] = [rgb]
    for output in ("depth", "accumulation"):
        page.select("Output type", output)
        views.append(changed_render(page, views[-1], 60, f"the {output} view"))
        assert is_rendered(views[-1]), f"the {output} view is blank"
        page.save(f"{method}-{output}")


def test_rvs_nerfacto_live_render_depth_and_accumulation(scene, tmp_path):
    with training_with_viewer("rvs-nerfacto", scene, tmp_path) as url, viewer_page(url) as page:
        wait_for(lambda: page.step() >= 0, 120, "a step count")
        first_step, first = page.step(), first_render(page)
        wait_for(lambda: page.step() >= first_step + 40, 240, f"the step counter to pass {first_step + 40}")
        later = changed_render(page, first, 120, "the render to change as training proceeds")
        print(f"steps {first_step} → {page.step()}: {changed_share(first, later):.1%} of the render changed")
        page.save("rvs-nerfacto-rgb")
        check_depth_and_accumulation_views(page, later, "rvs-nerfacto")


def test_rvs_mc_k_control_depth_and_accumulation(scene, tmp_path):
    label = "Render K"
    with training_with_viewer("rvs-mc", scene, tmp_path, "--pipeline.model.num-radiance-samples", "8") as url, viewer_page(url) as page:
        assert page.has_control(label) and page.number(label) == "8"
        wait_for(lambda: page.step() >= 40, 240, "40 training steps")
        page.click("Pause Training")
        time.sleep(3)  # the last render of the running model arrives
        paused_step = page.step()
        before = first_render(page, 60)
        page.save("rvs-mc-k8")
        page.set_number(label, 1)
        after = changed_render(page, before, 60, "the render to change with K")
        print(f"K 8 → 1 at step {paused_step}: {changed_share(before, after):.1%} of the render changed")
        page.save("rvs-mc-k1")
        check_depth_and_accumulation_views(page, after, "rvs-mc")
        page.click("Resume Training")
        wait_for(lambda: page.step() >= paused_step + 20, 240, "training to go on after changing K")
