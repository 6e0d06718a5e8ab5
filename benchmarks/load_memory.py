"""Memory while loading a checkpoint: does the loader hold the weights twice?

Writes a VideoMAE-B Hugging Face checkpoint (random weights) as one fp32 `model.safetensors`
and as fp16 shards (`model.safetensors.index.json`), then loads each in a fresh process and
samples that process's private (anonymous) memory every 5 ms. The fp32 model itself is the
floor; weights files are memory-mapped, so their pages are file cache, not private memory.

    python -m benchmarks.load_memory [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_PROBE = """
import json, sys, threading, time
def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
from models import load_model
import torch
base, peak, done = anon(), [0], False
def sample():
    while not done:
        peak[0] = max(peak[0], anon()); time.sleep(0.005)
t = threading.Thread(target=sample); t.start()
model = load_model(sys.argv[1])
done = True; t.join()
params = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"model_mb": params / 1e6, "peak_extra_mb": (peak[0] - base) / 1e6,
                  "after_mb": (anon() - base) / 1e6, "format": model.source.name, "dtype": model.source.dtype}))
"""


def write_checkpoints(root: Path) -> dict[str, Path]:
    import transformers

    config = transformers.VideoMAEConfig(num_labels=400)
    model = transformers.VideoMAEForVideoClassification(config).eval()
    model.save_pretrained(root / "fp32")
    model.half().save_pretrained(root / "fp16-sharded", max_shard_size="100MB")
    return {"fp32, one file": root / "fp32", "fp16, sharded": root / "fp16-sharded"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="where to write the checkpoints (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        paths = write_checkpoints(root)
        print("| checkpoint | files | model (fp32) | peak private memory added while loading | after |")
        print("|---|---|---|---|---|")
        for name, path in paths.items():
            files = sum(f.stat().st_size for f in path.iterdir() if f.suffix == ".safetensors")
            out = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {name} | {files / 1e6:.0f} MB | {r['model_mb']:.0f} MB | {r['peak_extra_mb']:.0f} MB | "
                  f"{r['after_mb']:.0f} MB |")  # fmt: skip


if __name__ == "__main__":
    main()
