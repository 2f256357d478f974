"""A published ComfyUI client (comfy-api-simplified, PyPI) against
`fmimage serve`: it queues ComfyUI's default workflow and waits on /ws
(status, executing null), then its img2img workflow after /upload/image.
The images must be the CLI's bytes for the same settings."""
import os
import sys
import tempfile

from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper

sys.path.insert(0, os.path.dirname(__file__))
from serverproc import Server, cli_png  # noqa: E402


def node(class_type, title, **inputs):
    return {"class_type": class_type, "inputs": inputs, "_meta": {"title": title}}


# ComfyUI's default workflow as "Save (API)" exports it
DEFAULT = {
    "3": node("KSampler", "KSampler", seed=42, steps=6, cfg=7.5, sampler_name="euler", scheduler="normal", denoise=1,
              model=["4", 0], positive=["6", 0], negative=["7", 0], latent_image=["5", 0]),
    "4": node("CheckpointLoaderSimple", "Load Checkpoint", ckpt_name="tiny-sd1.safetensors"),
    "5": node("EmptyLatentImage", "Empty Latent Image", width=64, height=64, batch_size=1),
    "6": node("CLIPTextEncode", "Positive", text="a red fox in snow", clip=["4", 1]),
    "7": node("CLIPTextEncode", "Negative", text="blurry", clip=["4", 1]),
    "8": node("VAEDecode", "VAE Decode", samples=["3", 0], vae=["4", 2]),
    "9": node("SaveImage", "Save Image", filename_prefix="ComfyUI", images=["8", 0]),
}


def main():
    tmp = tempfile.mkdtemp(prefix="fmimage-comfy-")
    srv = Server()
    try:
        api = ComfyApiWrapper(f"http://127.0.0.1:{srv.port}")
        wf = ComfyWorkflowWrapper(DEFAULT)
        images = api.queue_and_wait_images(wf, "Save Image")
        got = list(images.values())[0]
        want = cli_png(f"{tmp}/fox.png", "a red fox in snow", "-n", "blurry", "--seed", "42", "-W", "64", "-H", "64",
                       "--steps", "6", "--cfg", "7.5", "--sampler", "euler", "--scheduler", "normal", "--rng", "cpu")
        assert got == want, "default workflow: bytes differ from the CLI's"
        print(f"comfy-api-simplified default workflow: {len(got)} bytes, equal to the CLI's")

        # img2img: LoadImage -> VAEEncode -> KSampler denoise 0.6 (6 of int(6 / 0.6) = 10 steps)
        up = api.upload_image(f"{tmp}/fox.png")
        wf = ComfyWorkflowWrapper(dict(DEFAULT))
        wf["10"] = node("LoadImage", "Load Image", image=f"{up['subfolder']}/{up['name']}")
        wf["5"] = node("VAEEncode", "VAE Encode", pixels=["10", 0], vae=["4", 2])
        wf.set_node_param("KSampler", "denoise", 0.6)
        wf.set_node_param("KSampler", "seed", 7)
        images = api.queue_and_wait_images(wf, "Save Image")
        got = list(images.values())[0]
        want = cli_png(f"{tmp}/i2i.png", "a red fox in snow", "-n", "blurry", "--seed", "7", "-W", "64", "-H", "64",
                       "-i", f"{tmp}/fox.png", "--strength", "0.55", "--steps", "10", "--cfg", "7.5",
                       "--sampler", "euler", "--scheduler", "normal", "--rng", "cpu")
        assert got == want, "img2img workflow: bytes differ from the CLI's"
        print(f"comfy-api-simplified img2img workflow (upload_image, denoise 0.6): {len(got)} bytes, equal to the CLI's")
        info = api.get_object_info()
        assert "KSamplerAdvanced" in info and "LoraLoader" in info, sorted(info)
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
