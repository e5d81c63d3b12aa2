"""Train googlenet_mini on the embedded default; used by the resume test (run, SIGKILL, run again)."""

import sys

from inception_keras import get_spec
from inception_keras.data import load_data
from inception_keras.train import TrainConfig, train

data_dir, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = load_data("sklearn_digits", data_dir)
_, result = train(get_spec("googlenet_mini"), data, out, TrainConfig(epochs=epochs, learning_rate=0.05), verbose=2)
print("RESULT", result.epochs_total, result.epochs_this_run, result.resumed_from_epoch, flush=True)
