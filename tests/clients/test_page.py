"""The web page at / in a real browser: Debian's chromium and chromedriver
driven by selenium (PyPI). Types a prompt, sets a small size, clicks
Generate, waits for the image and its infotext, checks the gallery; with
--taesd, the live preview (8 x the latent, 256 px here) must have stood in
the result's place before the final 64 px image. Saves a screenshot to
build/serve-page.png."""
import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, os.path.dirname(__file__))
from serverproc import Server  # noqa: E402


def main():
    srv = Server("--taesd", "tests/data/taesd-weights.safetensors", "--preview-every", "10")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=420,900"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        drv.get(f"http://127.0.0.1:{srv.port}/")
        wait = WebDriverWait(drv, 120)
        # the pickers fill from the API
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#sampler option")) > 5)
        models = [o.text for o in drv.find_elements(By.CSS_SELECTOR, "#model option")]
        assert models == ["tiny-sd1"], models
        p = drv.find_element(By.ID, "prompt")
        p.clear()
        p.send_keys("a lighthouse at dusk")
        for field, value in (("width", "64"), ("height", "64"), ("steps", "60"), ("seed", "5")):
            e = drv.find_element(By.ID, field)
            e.clear()
            e.send_keys(value)
        # the result's sizes as the page shows them, from before the click to the end
        drv.execute_script("window.widths=[];const r=document.getElementById('result');"
                           "r.onload=()=>window.widths.push(r.naturalWidth);")
        drv.find_element(By.ID, "generate").click()
        try:
            wait.until(lambda d: d.find_element(By.ID, "info").text != "")
        except Exception:
            print("page: no infotext; error:", drv.find_element(By.ID, "error").text,
                  "status:", drv.find_element(By.ID, "status").text)
            raise
        info = drv.find_element(By.ID, "info").text
        assert info.startswith("a lighthouse at dusk\nSteps: 60,") and "Seed: 5, Size: 64x64" in info, info
        widths = drv.execute_script("return window.widths")
        assert 256 in widths and widths[-1] == 64, widths
        assert len(drv.find_elements(By.CSS_SELECTOR, "#gallery img")) == 1
        w = drv.execute_script("return document.getElementById('result').naturalWidth")
        assert w == 64, w
        assert drv.find_element(By.ID, "error").text == ""
        os.makedirs("build", exist_ok=True)
        drv.save_screenshot("build/serve-page.png")
        print("page: generated, infotext:", info.replace("\n", " | "))
    finally:
        drv.quit()
        srv.stop()
    print("page: all passed")


if __name__ == "__main__":
    main()
