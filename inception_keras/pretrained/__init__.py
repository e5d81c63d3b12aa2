"""Pretrained GoogLeNet weights from torchvision, TF-slim and BVLC Caffe files (no torch or Caffe needed).

Readers turn a file into named numpy arrays; converters map those names onto the
layers of the matching spec, checking every shape before anything is assigned.
"""

from __future__ import annotations

from inception_keras.utils.errors import UserError


class WeightsError(UserError, ValueError):
    """A weights file cannot be read or does not fit the model; the message names the file and the tensor."""
