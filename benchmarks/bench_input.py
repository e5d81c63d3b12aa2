"""Does the input pipeline keep up? Decode + the paper's augmentation at 224 px, against the model's training step.

    python benchmarks/bench_input.py [--images 256] [--batch 32]

Writes JPEGs of ImageNet's typical size (about 500x375, smooth random content) into an image folder,
then times (a) the training pipeline of `folder:` datasets — tfds ImageFolder decode, random crop of
8-100 % of the area with aspect 3/4-4/3, flip, resize to 224, [-1, 1], batch — with nothing cached,
and (b) `googlenet_torchvision` training steps (SGD, aux losses) on the same cores, in this process.
Goal: the pipeline >= 3x the model, so the accelerator (or here the CPU) is never starved.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchlib import Results  # noqa: E402


def write_jpegs(root: Path, count: int, classes: int = 4) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, number in (("train", count), ("validation", classes)):
        for i in range(number):
            folder = root / split / f"class_{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            h, w = int(rng.integers(330, 420)), int(rng.integers(440, 560))
            coarse = rng.uniform(0, 255, (h // 16 + 1, w // 16 + 1, 3))
            image = np.kron(coarse, np.ones((16, 16, 1)))[:h, :w] + rng.normal(0, 12, (h, w, 3))
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)


def pipeline_speed(root: Path, batch: int, epochs: int) -> float:
    from inception_keras.data import load_data, make_pipeline

    data = load_data(f"folder:{root}")
    dataset = make_pipeline(data.train, input_shape=(224, 224, 3), classes=len(data.class_names), batch_size=batch,
                            output_names=("predictions", "aux_1", "aux_2"), training=True, augment=True,
                            num_examples=None, seed=0)
    for _ in dataset.take(2):
        pass
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for images, _ in dataset:
            count += int(images.shape[0])
    return count / (time.perf_counter() - start)


def model_speed(batch: int, steps: int) -> float:
    sys.path.insert(0, os.path.dirname(__file__))
    from peer_worker import KerasSide

    side = KerasSide(batch, 224, jit=False)
    for _ in range(2):
        side.step("train", "float32")
    start = time.perf_counter()
    for _ in range(steps):
        side.step("train", "float32")
    return batch * steps / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(Path(tmp), args.images)
        pipeline = pipeline_speed(Path(tmp), args.batch, args.epochs)
    model = model_speed(args.batch, args.steps)
    results = Results("bench_input", "Does the input pipeline keep up?", "bench",
                      "`benchmarks/bench_input.py`: the training pipeline of a `folder:` dataset (JPEG decode of "
                      "~500×375 images, the paper's random crop and flip, resize to 224, nothing cached) against "
                      "`googlenet_torchvision` float32 training steps on the same cores, in one process.")
    results.add(["| images/s | input pipeline (decode + augment, 224 px) | googlenet_torchvision training "
                 "| ratio (goal ≥ 3) |", "|---|---:|---:|---:|",
                 f"| float32, batch {args.batch} | {pipeline:.0f} | {model:.1f} | **{pipeline / model:.1f}** |"])
    results.figures = {"pipeline": pipeline, "model": model}
    results.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
