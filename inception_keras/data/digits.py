"""The embedded default dataset: scikit-learn's bundled 8x8 handwritten digits as a tfds builder.

1,797 real images (UCI "Optical Recognition of Handwritten Digits", the copy that
scikit-learn ships), 10 classes, split 80/20 stratified with a fixed seed. Importing
this module registers `sklearn_digits`, so `tfds.load("sklearn_digits")` works with no
network: the data come from the installed scikit-learn package.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 digits, grey levels 0-16 scaled to 0-255."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: 1,437 train / 360 test, stratified, seed 0."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="8x8 handwritten digits bundled with scikit-learn (sklearn.datasets.load_digits).",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 1)),
                "label": tfds.features.ClassLabel(names=[str(digit) for digit in range(10)]),
            }),
            supervised_keys=("image", "label"),
            homepage="https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
        )

    def _split_generators(self, dl_manager):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
        index = np.arange(len(images))
        train, test = train_test_split(index, test_size=0.2, stratify=digits.target, random_state=0)
        return {
            "train": self._generate_examples(images, digits.target, np.sort(train)),
            "test": self._generate_examples(images, digits.target, np.sort(test)),
        }

    def _generate_examples(self, images, labels, index):
        for i in index:
            yield int(i), {"image": images[i], "label": int(labels[i])}
