"""Train googlenet_mini on the embedded default; used by the resume tests (run, SIGKILL, run again).

    python train_digits.py DATA_DIR OUT EPOCHS [ELASTIC_SPACE]

With ELASTIC_SPACE the training is elastic (one sampled child a step, on the first 512 training images: 8 steps an
epoch) and the script prints the trainer's count of steps drawn when training begins (after any restore):
`DRAWN n`."""

import dataclasses
import sys

import keras

from inception_keras import get_spec
from inception_keras.data import load_data
from inception_keras.train import TrainConfig, train

data_dir, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = load_data("sklearn_digits", data_dir)
config, callbacks = TrainConfig(epochs=epochs, learning_rate=0.05), []
if len(sys.argv) > 4:
    from inception_keras.elastic import resolve_elastic

    class Drawn(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):  # after the standard callbacks: the backup is restored by now
            print("DRAWN", int(self.model.drawn.value), flush=True)

    config = TrainConfig(epochs=epochs, optimizer="adam", learning_rate=3e-3, ema=False,
                         elastic=resolve_elastic(sys.argv[4]), elastic_samples=1)
    callbacks = [Drawn()]
    data = dataclasses.replace(data, train=data.train.take(512), train_size=512)
_, result = train(get_spec("googlenet_mini"), data, out, config, callbacks=callbacks, verbose=2)
print("RESULT", result.epochs_total, result.epochs_this_run, result.resumed_from_epoch, flush=True)
