import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from inception_keras import SpecError, get_spec
from inception_keras.data import load_data
from inception_keras.train import RunExistsError, TrainConfig, compile_model, make_optimizer, read_history, train

SCRIPTS = Path(__file__).parents[1] / "scripts"


def tiny_spec(classes=3):
    return get_spec("googlenet_mini").with_input_size(24).with_classes(classes)


def test_loss_goes_down_and_standard_callbacks_write(image_folder, tmp_path):
    data = load_data(f"folder:{image_folder}")
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(epoch)

    config = TrainConfig(epochs=4, batch_size=8, optimizer="adam", learning_rate=3e-3, ema=False)
    model, result = train(tiny_spec(), data, tmp_path / "run", config, callbacks=[Record()], verbose=0)
    history = result.history
    assert seen == [0, 1, 2, 3]
    assert history["loss"][-1] < history["loss"][0]
    assert "val_predictions_accuracy" in history and "predictions_top5_accuracy" not in history
    assert not [key for key in history if "top5" in key]  # 3 classes: no top-5
    for name in ("best.keras", "history.csv", "spec.yaml", "class_names.txt", "summary.json", "logs", "run.json"):
        assert (tmp_path / "run" / name).exists(), name
    assert not (tmp_path / "run" / "backup").exists()  # removed when training finishes
    assert not (tmp_path / "run" / ".lock").exists()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs_total"] == 4 and summary["train_images_per_second"] > 0
    assert summary["best_val_accuracy"] == max(history["val_predictions_accuracy"])
    assert history["val_predictions_accuracy"][summary["best_epoch"] - 1] == summary["best_val_accuracy"]
    with pytest.raises(RunExistsError, match="holds a finished training"):
        train(tiny_spec(), data, tmp_path / "run", config, verbose=0)
    assert (tmp_path / "run" / "best.keras").exists()
    # the total loss is the weighted sum: predictions + 0.3 * aux_1 + 0.3 * aux_2
    for epoch in range(4):
        combined = history["predictions_loss"][epoch] + 0.3 * (history["aux_1_loss"][epoch] +
                                                               history["aux_2_loss"][epoch])
        assert history["loss"][epoch] == pytest.approx(combined, rel=1e-3)


def test_metrics_with_five_or_more_classes_include_top5():
    spec = tiny_spec(classes=6)
    from inception_keras import build_model

    model = build_model(spec)
    compile_model(model, spec, TrainConfig(), steps_per_epoch=10)
    x = np.zeros((4, 24, 24, 3), "float32")
    y = keras.utils.to_categorical([0, 1, 2, 3], 6)
    logs = model.evaluate(x, {"predictions": y, "aux_1": y, "aux_2": y}, return_dict=True, verbose=0)
    assert {"predictions_accuracy", "predictions_top5", "aux_1_top5", "aux_2_accuracy"} <= set(logs)


def test_paper_recipe_optimizer():
    sgd = make_optimizer(TrainConfig(learning_rate=0.1), steps_per_epoch=10)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.9 and sgd.use_ema
    schedule = sgd.learning_rate if callable(sgd.learning_rate) else sgd._learning_rate
    assert float(schedule(79)) == pytest.approx(0.1)
    assert float(schedule(80)) == pytest.approx(0.096)
    assert float(schedule(160)) == pytest.approx(0.1 * 0.96 ** 2)
    adam = make_optimizer(TrainConfig(optimizer="adam", ema=False), steps_per_epoch=10)
    assert isinstance(adam, keras.optimizers.Adam) and not adam.use_ema
    with pytest.raises(ValueError, match="TrainConfig.optimizer"):
        TrainConfig(optimizer="rmsprop")


def test_class_count_or_channel_mismatch_is_refused(image_folder):
    data = load_data(f"folder:{image_folder}")
    with pytest.raises(ValueError, match="has 10 classes but dataset .* has 3"):
        train(tiny_spec(classes=10), data, None, TrainConfig(epochs=1))
    four_channels = tiny_spec().replace(input_shape=(24, 24, 4))
    with pytest.raises(SpecError, match=r"input_shape\[2\]: images are fed with 1 \(grey\) or 3 \(RGB\) "
                                        r"channels, got 4"):
        train(four_channels, data, None, TrainConfig(epochs=1))


def _backed_up_epochs(out):
    try:
        return json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.parametrize("elastic", [False, True], ids=["normal", "elastic"])
def test_training_killed_with_sigkill_resumes_from_last_finished_epoch(digits_dir, tmp_path, elastic):
    """Also an elastic run, whose sampler goes on from the steps the finished epochs drew (a child is a function
    of (seed, steps drawn, index), the count restored with the backup)."""
    out, epochs = tmp_path / "run", 2 if elastic else 3
    command = [sys.executable, str(SCRIPTS / "train_digits.py"), digits_dir, str(out), str(epochs)]
    if elastic:
        space = tmp_path / "space.yaml"
        space.write_text(json.dumps({"name": "few", "base": "googlenet_mini", "vary": [
            {"modules": ["3a", "4b"], "widths": ["ch1x1", "ch3x3"], "choices": [2, 4, 8]}]}))
        command.append(str(space))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 240
    while _backed_up_epochs(out) < 1 and time.time() < deadline and first.poll() is None:
        time.sleep(0.1)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    finished = _backed_up_epochs(out)
    assert 1 <= finished < epochs
    second = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert f"Resuming {out} after epoch {finished} of {epochs}" in second.stdout
    assert f"note: {out} was locked by pid {first.pid} on host" in second.stdout  # the killed run's lock
    assert not (out / ".lock").exists()
    total, this_run, resumed = map(int, second.stdout.split("RESULT")[1].split())
    assert (total, this_run, resumed) == (epochs, epochs - finished, finished)
    assert read_history(out / "history.csv")["epoch"] == list(range(epochs))
    if elastic:
        assert first.stdout.read().count("DRAWN 0") == 1
        assert f"DRAWN {finished * 8}\n" in second.stdout  # 8 steps an epoch: the sampler goes on from the backup
        assert json.loads((out / "run.json").read_text())["recipe"]["elastic"]["choices"][0] == ["3a", "ch1x1",
                                                                                                 [2, 4, 8]]
