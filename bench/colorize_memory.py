"""Peak memory of `aiaic colorize` on one photo, by photo size.

PYTHONPATH=. python bench/colorize_memory.py                   # the demo model, random weights
PYTHONPATH=. python bench/colorize_memory.py --sizes 640x480,6000x4000 --run runs/demo/full

Each size runs in a fresh process (`aiaic colorize --checkpoint RUN photo.jpg out.jpg`, a JPEG
photo with a WAV of its basename), whose peak resident memory is printed with the difference to
the first size. The peak is the child's own high-water mark (VmHWM, Linux): `ru_maxrss` would
carry over the parent's resident size from before the child's exec, so the large photos this
script makes in memory would be counted as the child's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import scipy.io.wavfile
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.colorize import _photo, random_run  # noqa: E402


def run_cli(argv: list[str]) -> tuple[float, str]:
    """(peak RSS in MB, stdout) of a child process running `aiaic ARGV` (it must exit 0)."""
    code = (
        "import runpy, sys; sys.argv = sys.argv[1:]; "
        "status = 0\n"
        "try:\n    runpy.run_module('aiaic_jax.cli', run_name='__main__')\n"
        "except SystemExit as e:\n    status = e.code or 0\n"
        "hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM:')][0]\n"
        "print('peak_kb', hwm.split()[1])\n"
        "sys.exit(status)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "aiaic", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"aiaic {argv[0]} failed: {done.stderr[-2000:]}")
    line = [x for x in done.stdout.splitlines() if x.startswith("peak_kb")][-1]
    return int(line.split()[1]) / 1024, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a training run (default: the demo model, random weights)")
    parser.add_argument("--sizes", default="640x480,2000x1500,6000x4000")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        run = args.run or random_run(os.path.join(scratch, "run"))
        first = None
        for text in args.sizes.split(","):
            width, height = (int(v) for v in text.split("x"))
            photo = os.path.join(scratch, f"p{width}x{height}.jpg")
            Image.fromarray(_photo((width, height), rng)).save(photo, quality=90)
            t = np.arange(3 * 16000) / 16000
            wave = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
            scipy.io.wavfile.write(photo[:-4] + ".wav", 16000, wave)
            output = os.path.join(scratch, f"out{width}x{height}.jpg")
            peak, _ = run_cli(["colorize", "--checkpoint", run, photo, output])
            first = peak if first is None else first
            print(f"{width}x{height}: peak RSS {peak:.0f} MB (+{peak - first:.0f} MB)", flush=True)


if __name__ == "__main__":
    main()
