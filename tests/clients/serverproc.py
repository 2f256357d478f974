"""Starts `fmimage serve` on a free loopback port for the client tests
($FM_BIN, default build/fmimage) and stops it with SIGTERM (exit 0 expected)."""
import os
import re
import signal
import subprocess
import tempfile
import time

BIN = os.environ.get("FM_BIN", "build/fmimage")
MODEL = "tests/data/tiny-sd1.safetensors"


class Server:
    def __init__(self, *extra):
        self.err = tempfile.NamedTemporaryFile(prefix="fmimage-serve-", suffix=".err", delete=False)
        env = dict(os.environ, FMIMAGE_PRECISION_CACHE="off")
        self.proc = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "-m", MODEL, *extra],
                                     stderr=self.err, stdout=subprocess.DEVNULL, env=env)
        for _ in range(600):
            text = open(self.err.name).read()
            m = re.search(r"serving on http://127\.0\.0\.1:(\d+)/", text)
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                raise RuntimeError("server exited: " + text)
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        os.unlink(self.err.name)
        assert code == 0, f"server exit {code}"


def cli_png(out, *args):
    env = dict(os.environ, FMIMAGE_PRECISION_CACHE="off")
    subprocess.run([BIN, "-m", MODEL, *args, "-q", "--force", "-o", out], check=True, env=env)
    return open(out, "rb").read()
