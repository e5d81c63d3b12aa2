"""Transfer learning on the embedded digits: a base trained on the ten digits, a new 2-class head for parity."""

import shutil
from dataclasses import replace

import numpy as np
import pytest

from inception_keras import get_spec
from inception_keras.cli import main
from inception_keras.data import load_data
from inception_keras.pretrained.convert import load_keras_model
from inception_keras.train import TrainConfig


@pytest.fixture(scope="module")
def parity_folder(tmp_path_factory):
    """The digits as an image folder with two classes, even and odd (PNG, 8x8 grey)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("parity")
    rng = np.random.default_rng(0)
    for split, count in (("train", 400), ("validation", 150)):
        for i in rng.choice(len(digits.target), size=count, replace=False):
            label = "even" if digits.target[i] % 2 == 0 else "odd"
            (root / split / label).mkdir(parents=True, exist_ok=True)
            pixels = np.round(digits.images[i] * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def digit_base(digits_run):
    """googlenet_mini trained briefly on the ten digits: a .keras file of our own to start from."""
    return digits_run / "best.keras"


def weights_of(model, *names):
    return [np.array(w) for name in names for w in model.get_layer(name).get_weights()]


def test_freeze_trains_the_new_head_only_then_fine_tunes_all_but_batch_norm(digit_base, parity_folder, tmp_path,
                                                                            capsys):
    out = tmp_path / "parity"
    args = ["train", "googlenet_mini", "--dataset", f"folder:{parity_folder}", "--weights", str(digit_base),
            "--freeze", "--epochs", "3", "--optimizer", "adam", "--learning-rate", "0.01", "--no-ema",
            "--fine-tune-epochs", "1", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "has 2 classes: using a 2-class head" in text
    assert "newly initialised: aux_1, aux_2, predictions" in text

    base = load_keras_model(digit_base)
    head = load_keras_model(out / "head" / "best.keras")
    tuned = load_keras_model(out / "best.keras")
    body = ("conv1_conv", "inception_4b_3x3_conv", "inception_4b_3x3_bn")
    for before, after in zip(weights_of(base, *body), weights_of(head, *body)):
        np.testing.assert_array_equal(before, after)  # frozen, batch norm statistics included
    assert not np.array_equal(weights_of(base, "aux_1_fc")[0], weights_of(head, "aux_1_fc")[0])  # heads trained
    assert head.get_layer("predictions").units == 2
    conv = "inception_4b_3x3_conv"
    assert not np.array_equal(weights_of(head, conv)[0], weights_of(tuned, conv)[0])  # phase 2 trains the base ...
    for before, after in zip(weights_of(head, "inception_4b_3x3_bn"), weights_of(tuned, "inception_4b_3x3_bn")):
        np.testing.assert_array_equal(before, after)  # ... but not batch norm
    import json

    head_summary = json.loads((out / "head" / "summary.json").read_text())
    assert head_summary["best_val_accuracy"] >= 0.85  # parity from digit features, with only the head trained

    assert main(["export", str(out), "--base-dir", str(tmp_path / "models")]) == 0
    assert "exported" in capsys.readouterr().out


def test_without_aux_heads_and_refusals(digit_base, parity_folder, tmp_path, capsys):
    args = ["train", "googlenet_mini", "--dataset", f"folder:{parity_folder}", "--weights", str(digit_base),
            "--no-aux", "--epochs", "1", "--optimizer", "adam", "--out", str(tmp_path / "noaux")]
    assert main(args) == 0
    model = load_keras_model(tmp_path / "noaux" / "best.keras")
    assert model.output_shape == (None, 2)
    assert main(["train", "googlenet_mini", "--freeze", "--out", str(tmp_path / "x")]) == 2
    assert "--freeze and --fine-tune-epochs need --weights" in capsys.readouterr().err
    missing = str(tmp_path / "nothing.pth")
    assert main(["train", "googlenet_mini", "--weights", missing, "--out", str(tmp_path / "y")]) == 2
    assert "--weights: " in capsys.readouterr().err


def test_overwrite_of_a_folder_not_ours_deletes_nothing(digit_base, tmp_path, capsys):
    """The user's files in folders named like a run's (backup, logs, head) survive --overwrite, which is refused."""
    folder = tmp_path / "P"
    for name in ("backup/thesis.tex", "logs/app.log", "head/notes.md"):
        (folder / name).parent.mkdir(parents=True)
        (folder / name).write_text("mine")
    args = ["train", "googlenet_mini", "--weights", str(digit_base), "--freeze", "--epochs", "1",
            "--fine-tune-epochs", "1", "--out", str(folder), "--overwrite"]
    assert main(args) == 2
    assert f"error: --overwrite refused: {folder} holds {folder / 'backup' / 'thesis.tex'}, which no training run " \
           f"writes" in capsys.readouterr().err
    assert sorted(path.name for path in folder.rglob("*.*")) == ["app.log", "notes.md", "thesis.tex"]


def test_phase_two_resumes_only_with_the_weights_phase_one_started_from(digit_base, parity_folder, tmp_path):
    """A finished phase 1 is checked against the weights file (path and content) before phase 2 starts or resumes."""
    from inception_keras.training.run_dir import run_record, write_run_files
    from inception_keras.train import RunMismatchError, fine_tune

    data = load_data(f"folder:{parity_folder}")
    spec = get_spec("googlenet_mini").with_classes(2)
    config = TrainConfig(epochs=1, optimizer="adam", ema=False)
    started_from = tmp_path / "base.keras"
    shutil.copyfile(digit_base, started_from)
    head = tmp_path / "run" / "head"
    head.mkdir(parents=True)
    write_run_files(head, run_record(spec, data, replace(config, freeze="base"), started_from), spec, data.class_names)
    (head / "summary.json").write_text("{}")  # phase 1 finished
    other = tmp_path / "other.keras"
    shutil.copyfile(digit_base, other)
    with pytest.raises(RunMismatchError, match=rf"^{head} was started with weights \"{started_from}\"; this run asks "
                                               rf"for \"{other}\""):
        fine_tune(spec, data, tmp_path / "run", config, other, fine_tune_epochs=1)
    with open(started_from, "ab") as handle:
        handle.write(b"changed")  # the same path, other bytes
    with pytest.raises(RunMismatchError, match=rf"^{head} was started with weights_sha256 \"[0-9a-f]{{64}}\"; "):
        fine_tune(spec, data, tmp_path / "run", config, started_from, fine_tune_epochs=1)
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["head"]
