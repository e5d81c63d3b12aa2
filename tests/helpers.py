"""Helpers that test modules in several folders share (tests/ is on sys.path: pytest puts the root conftest's
folder there).

The GoogLeNet weights of the recorded pretrained fixtures, and the comparisons of the equivalence tests:
`tests/reference/make_reference.py` (run by `make verify-weights` in a venv with torch + torchvision, tf_slim and
OpenCV) made deterministic weights and recorded each framework's outputs; `fixture_weights` makes the same weights
again (`synthetic.py`, from the recorded seed, manifest and statistics).
"""

import sys
from pathlib import Path

import numpy as np

from inception_keras.pretrained.convert import SourceWeights

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS / "reference"))
import synthetic  # noqa: E402

FIXTURES = TESTS / "fixtures" / "pretrained"
LAYOUT = {"torchvision": "oihw", "slim": "hwio", "caffe": "oihw"}
EVAL_IMAGES = dict(count=3, size=224, seed=100)


def fixture_weights(source: str):
    record = np.load(FIXTURES / f"{source}.npz")
    names, shapes = synthetic.manifest_from(record)
    weights = synthetic.generate(names, shapes, LAYOUT[source], int(record["seed"]), float(record["gain"]))
    stats = {key[5:]: record[key].astype(np.float32) for key in record.files if key.startswith("stat:")}
    weights = synthetic.standardized(weights, stats) if source == "caffe" else {**weights, **stats}
    return record, SourceWeights(f"{source} fixture", source, weights)


def relative_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    """Max abs difference over the reference values' spread (their standard deviation)."""
    return float(np.abs(ours.astype(np.float64) - reference).max() / reference.std())


def top5(values: np.ndarray) -> np.ndarray:
    return np.argsort(-values, axis=1, kind="stable")[:, :5]
