"""A1111's own Python client (webuiapi, PyPI) against `fmimage serve`:
txt2img (and its hires fix), img2img (and inpainting), options and
interrupt. The images must be the CLI's
bytes for the same settings."""
import base64
import os
import sys
import tempfile
import threading
import time

import webuiapi
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from serverproc import Server, cli_png  # noqa: E402


def main():
    tmp = tempfile.mkdtemp(prefix="fmimage-clients-")
    srv = Server()
    try:
        api = webuiapi.WebUIApi(host="127.0.0.1", port=srv.port)
        # txt2img: webuiapi sends its whole default payload (hires fields, eta, styles...)
        r = api.txt2img(prompt="a red fox in snow", seed=42, width=64, height=64, steps=6, cfg_scale=7.5,
                        sampler_name="Euler", scheduler="normal")
        want = cli_png(f"{tmp}/fox.png", "a red fox in snow", "--seed", "42", "-W", "64", "-H", "64", "--steps", "6",
                       "--cfg", "7.5", "--sampler", "Euler", "--scheduler", "normal")
        got = base64.b64decode(r.json["images"][0])
        assert got == want, "txt2img: bytes differ from the CLI's"
        assert r.info["seed"] == 42 and r.info["sd_model_name"] == "tiny-sd1", r.info
        assert r.image.size == (64, 64)
        print(f"webuiapi txt2img: {len(got)} bytes, equal to the CLI's; info seed {r.info['seed']}")
        # img2img: webuiapi re-encodes the PIL image; the pixels are what count
        init = Image.open("tests/data/e2e.png")
        r = api.img2img(images=[init], prompt="a red fox", seed=3, width=64, height=64, steps=6,
                        denoising_strength=0.5, cfg_scale=7, sampler_name="DPM++ 2M", scheduler="karras")
        want = cli_png(f"{tmp}/i2i.png", "a red fox", "--seed", "3", "-W", "64", "-H", "64", "--steps", "6",
                       "--cfg", "7", "-i", "tests/data/e2e.png", "--strength", "0.5", "--sampler", "DPM++ 2M",
                       "--scheduler", "karras")
        got = base64.b64decode(r.json["images"][0])
        assert got == want, "img2img: bytes differ from the CLI's"
        print(f"webuiapi img2img: {len(got)} bytes, equal to the CLI's")
        # the hires fix through webuiapi's enable_hr fields (it sends hr_upscaler "Latent" and the rest)
        r = api.txt2img(prompt="a red fox", seed=5, width=64, height=64, steps=4, enable_hr=True, hr_scale=2,
                        hr_second_pass_steps=3, denoising_strength=0.6, sampler_name="Euler", scheduler="normal")
        want = cli_png(f"{tmp}/hr.png", "a red fox", "--seed", "5", "-W", "64", "-H", "64", "--steps", "4",
                       "--hires-scale", "2", "--hires-steps", "3", "--hires-denoise", "0.6", "--sampler", "Euler",
                       "--scheduler", "normal")
        got = base64.b64decode(r.json["images"][0])
        assert got == want, "txt2img enable_hr: bytes differ from the CLI's"
        assert r.image.size == (128, 128)
        print(f"webuiapi txt2img enable_hr: {len(got)} bytes, equal to the CLI's")
        # inpainting: a mask with webuiapi's defaults (A1111's API: blur 4, fill, only masked, padding 0)
        mask = Image.new("RGB", (64, 64))
        mask.paste((255, 255, 255), (20, 16, 44, 40))
        mask.save(f"{tmp}/mask.png")
        r = api.img2img(images=[init], mask_image=mask, prompt="a red fox", seed=3, width=64, height=64, steps=6,
                        denoising_strength=0.6, sampler_name="Euler", scheduler="normal")
        want = cli_png(f"{tmp}/inpaint.png", "a red fox", "--seed", "3", "-W", "64", "-H", "64", "--steps", "6",
                       "-i", "tests/data/e2e.png", "--strength", "0.6", "--mask", f"{tmp}/mask.png", "--mask-blur",
                       "4", "--inpaint-fill", "fill", "--inpaint-only-masked", "--inpaint-padding", "0", "--sampler",
                       "Euler", "--scheduler", "normal")
        got = base64.b64decode(r.json["images"][0])
        assert got == want, "img2img with a mask: bytes differ from the CLI's"
        print(f"webuiapi img2img with a mask: {len(got)} bytes, equal to the CLI's")
        # options
        opts = api.get_options()
        assert opts["sd_model_checkpoint"].startswith("tiny-sd1.safetensors"), opts
        api.set_options({"sd_model_checkpoint": "tiny-sd1.safetensors"})
        assert [m["model_name"] for m in api.get_sd_models()] == ["tiny-sd1"]
        assert "Euler a" in [s["name"] for s in api.get_samplers()]
        print(f"webuiapi options: sd_model_checkpoint = {api.get_options()['sd_model_checkpoint']}")
        # interrupt a long job from another thread
        out = {}
        t = threading.Thread(target=lambda: out.update(r=api.txt2img(prompt="slow", seed=1, width=64, height=64,
                                                                         steps=1000)))
        t.start()
        for _ in range(600):
            p = api.get_progress()
            if p["state"]["sampling_steps"]:
                break
            time.sleep(0.05)
        assert p["state"]["sampling_steps"] == 1000, p
        api.interrupt()
        t.join(timeout=120)
        assert not t.is_alive()
        assert out["r"].images == [], "an interrupted job returns no images"
        print(f"webuiapi interrupt: stopped at step {p['state']['sampling_step']} of 1000")
    finally:
        srv.stop()
    print("webuiapi: all passed")


if __name__ == "__main__":
    main()
