"""Keras layers of our own: LRN, the fused batch norm, Caffe input conversion, and the XLA switch they share."""
