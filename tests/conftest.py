import contextlib
import fcntl
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import inception_keras  # noqa: E402, F401  (before any test module imports TensorFlow: it sets oneDNN's default)


@contextlib.contextmanager
def shared(tmp_path_factory, name: str):
    """A path all processes of this test session share (pytest-xdist's workers too), held under a lock while the
    block runs: the first to come makes what is there, the others find it made."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' base temp directories share this parent
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield root / name
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """A tfds data directory with the embedded default prepared once per session."""
    from inception_keras.data import load_data

    with shared(tmp_path_factory, "tfds") as path:
        load_data("sklearn_digits", str(path))
    return str(path)


@pytest.fixture(scope="session")
def digits_run(digits_dir, tmp_path_factory):
    """A run directory: googlenet_mini trained briefly (4 epochs, > 70 %) on the embedded digits, once per session
    (tests only read it)."""
    from inception_keras import get_spec
    from inception_keras.data import load_data
    from inception_keras.train import TrainConfig, train

    with shared(tmp_path_factory, "digits_run") as out:
        if not (out / "summary.json").exists():
            config = TrainConfig(epochs=4, optimizer="adam", learning_rate=3e-3, ema=False)
            _, result = train(get_spec("googlenet_mini"), load_data("sklearn_digits", digits_dir), out, config,
                              verbose=0)
            assert result.best_val_accuracy > 0.7
    return out


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """PNG images laid out root/split/label/*.png: 3 classes told apart by colour, sizes vary."""
    from PIL import Image

    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    for split, count in (("train", 8), ("validation", 4)):
        for label, colour in colours.items():
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                h, w = rng.integers(20, 40, size=2)
                pixels = np.clip(np.array(colour) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def slim_checkpoint(tmp_path_factory):
    """A full-size TF-slim inception_v1 checkpoint written by TensorFlow's own Saver (V2 format), holding the
    deterministic weights whose TF-slim outputs tests/fixtures/pretrained/slim.npz records. Returns its prefix."""
    import tensorflow as tf

    from helpers import fixture_weights

    _, weights = fixture_weights("slim")
    prefix = tmp_path_factory.mktemp("slim") / "inception_v1.ckpt"
    with tf.Graph().as_default():
        variables = [tf.compat.v1.Variable(value, name=name) for name, value in weights.tensors.items()]
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.variables_initializer(variables))
            tf.compat.v1.train.Saver(variables).save(session, str(prefix), write_meta_graph=False)
    return str(prefix)
