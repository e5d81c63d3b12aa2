"""What a training run needs beside the fit loop (`inception_keras.train`): callbacks, the run directory, locking,
owned-file removal, distribution."""
