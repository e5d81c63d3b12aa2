"""Train the tiny spec on an image folder, saving best.keras every epoch, and SIGKILL itself halfway through
writing it the KILL_AT-th time (the written bytes cut in half first); used by the run-integrity test.

Arguments: FOLDER OUT EPOCHS KILL_AT
"""

import os
import signal
import sys

import keras

from inception_keras import get_spec
from inception_keras import train as training
from inception_keras.data import load_data

folder, out, epochs, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
saves = 0
keras_save = keras.Model.save
checkpoint_epoch_end = training.BestCheckpoint.on_epoch_end


def save_then_die(self, filepath, *args, **kwargs):
    global saves
    keras_save(self, filepath, *args, **kwargs)
    saves += 1
    if saves == kill_at:
        os.truncate(filepath, os.path.getsize(filepath) // 2)
        print(f"KILLING while writing {filepath}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def save_every_epoch(self, epoch, logs=None):
    self.best = None
    checkpoint_epoch_end(self, epoch, logs)


keras.Model.save = save_then_die
training.BestCheckpoint.on_epoch_end = save_every_epoch
spec = get_spec("googlenet_mini").with_input_size(24).with_classes(3)
config = training.TrainConfig(epochs=epochs, batch_size=8, learning_rate=0.05)
training.train(spec, load_data(f"folder:{folder}"), out, config, verbose=2)
print("FINISHED", flush=True)
