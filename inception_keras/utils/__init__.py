"""Helpers with no Keras and no spec: user errors, atomic writes, CPU flags, image-header bounds."""
