"""End to end in a real headless Chromium (Debian's /usr/bin/chromium driven by playwright; no
browser download): the page loads, frames arrive and the canvas changes, keys reach the stream,
a typed prompt is applied, and nothing is fetched from anywhere but the local server."""
from pathlib import Path

import pytest
import torch

from worldstream.engine.rollout import RolloutConfig
from worldstream.engine.stream import StreamConfig, World
from worldstream.serve.server import Background, Server, ServerConfig

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
         "--no-first-run", "--no-sandbox", "--autoplay-policy=no-user-gesture-required"]
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium (.ci/run installs it)")


def test_the_page_streams_reacts_to_keys_and_prompts(tiny_teacher, tmp_path):
    from playwright.sync_api import sync_playwright

    torch.set_num_threads(1)
    world = World.load(tiny_teacher)
    fast = StreamConfig(rollout=RolloutConfig(sampler="x0", steps=1, text_scale=1.0, action_scale=1.0))
    bg = Background(Server(world, ServerConfig(port=0, stream=fast)))
    requests = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 900, "height": 800})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(bg.url + "/")
            page.wait_for_function("window.worldstream.framesDrawn > 5", timeout=60_000)
            pixels = "(() => { const c = document.getElementById('screen'); " \
                     "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data).join(','); })()"
            a = page.evaluate(pixels)
            page.wait_for_function("window.worldstream.framesDrawn > 30", timeout=60_000)
            assert page.evaluate(pixels) != a, "the canvas changes as frames arrive"
            page.click("#screen")
            page.keyboard.down("d")
            page.wait_for_function("window.worldstream.latencies.length >= 1", timeout=30_000)  # a frame applied the key
            page.keyboard.up("d")
            n = page.evaluate("window.worldstream.latencies.length")
            page.fill("#prompt", "it begins to snow")
            page.press("#prompt", "Enter")
            page.wait_for_function(f"window.worldstream.latencies.length > {n}", timeout=30_000)
            page.wait_for_timeout(500)
            overlay = page.inner_text("#overlay")
            assert "fps" in overlay and "key→frame" in overlay and world.name in overlay
            assert page.evaluate("window.worldstream.errors.length") == 0
            page.screenshot(path=str(tmp_path / "page.png"))
            assert (tmp_path / "page.png").stat().st_size > 5000
            browser.close()
    finally:
        bg.close()
    assert all(u.startswith(bg.url) for u in requests), [u for u in requests if not u.startswith(bg.url)]
