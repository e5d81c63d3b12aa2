"""Input data: tensorflow-datasets by name, image folders, and the embedded offline default.

The training pipeline follows Szegedy et al. (2015), section 6: optional random crops
covering 8-100 % of the image with aspect ratio 3/4-4/3, and horizontal flips.
Images become float32 in [-1, 1] (`to_model_input`, shared with the SavedModel
export); each label goes to every model output (`predictions`, `aux_1`, `aux_2`).
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf
import tensorflow_datasets as tfds

from inception_keras.digits import SklearnDigits
from inception_keras.errors import UserError

DEFAULT_DATASET = "sklearn_digits"
LOCAL_BUILDERS = {"sklearn_digits": SklearnDigits}  # prepared from installed packages, no network
VALIDATION_SPLITS = ("validation", "val", "test")
CACHE_LIMIT_BYTES = 1 << 30
NETWORK_PROBE = ("storage.googleapis.com", 443)


class DataError(UserError, ValueError):
    """A dataset cannot be loaded; the message says which, where, and what to do."""


@dataclass
class DataSplits:
    """Unbatched `(uint8 image, int64 label)` datasets and what is known about them."""

    name: str
    train: tf.data.Dataset
    validation: tf.data.Dataset
    class_names: list[str]
    train_size: int
    validation_size: int
    image_shape: tuple | None  # (H, W, C) when every image has it


def network_reachable(timeout: float = 3.0) -> bool:
    try:
        socket.create_connection(NETWORK_PROBE, timeout=timeout).close()
        return True
    except OSError:
        return False


def _pick_validation(name: str, splits) -> str:
    for split in VALIDATION_SPLITS:
        if split in splits:
            return split
    raise DataError(f"dataset {name!r} has splits {sorted(splits)}; need 'train' and one of "
                    f"{', '.join(VALIDATION_SPLITS)}")


def _count(data: tf.data.Dataset) -> int:
    cardinality = int(data.cardinality())
    return cardinality if cardinality >= 0 else int(data.reduce(0, lambda count, _: count + 1))


def _from_builder(name: str, builder) -> DataSplits:
    """Train and validation splits of a prepared builder.

    A builder whose info lists no splits (tfds' mock data) is read as train/test.
    """
    splits = builder.info.splits
    known = list(splits) or ["train", "test"]
    if "train" not in known:
        raise DataError(f"dataset {name!r} has splits {sorted(known)}; need a 'train' split")
    validation = _pick_validation(name, known)
    features = builder.info.features
    image, label = builder.info.supervised_keys or ("image", "label")
    if image not in features or label not in features or not hasattr(features[label], "names"):
        raise DataError(f"dataset {name!r} is not an image classification dataset: it needs an image feature and "
                        f"a ClassLabel (supervised keys {image!r}, {label!r}); features are {list(features)}")
    shape = tuple(features[image].shape)
    train = builder.as_dataset(split="train", as_supervised=True, shuffle_files=True)
    val = builder.as_dataset(split=validation, as_supervised=True)
    return DataSplits(
        name=name, train=train, validation=val,
        class_names=list(features[label].names),
        train_size=splits["train"].num_examples if splits else _count(train),
        validation_size=splits[validation].num_examples if splits else _count(val),
        image_shape=shape if None not in shape else None,
    )


def load_folder(root: str | Path) -> DataSplits:
    """Images laid out `root/split/label/*.png|jpg` through tfds' ImageFolder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {str(root)!r} does not exist; expected {root}/train/LABEL/*.png|jpg "
                        f"and {root}/validation/LABEL/*.png|jpg")
    try:
        builder = tfds.ImageFolder(str(root))
    except Exception as error:  # tfds raises several types for a bad layout
        raise DataError(f"image folder {str(root)!r}: {error}") from None
    return _from_builder(f"folder:{root}", builder)


def load_tfds(name: str, data_dir: str | None = None, download: bool = True) -> DataSplits:
    """A tfds dataset by name; fails within seconds, with instructions, when it cannot be had."""
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(f"no tensorflow-datasets dataset named {name!r}; the embedded default is "
                        f"{DEFAULT_DATASET!r}, image folders are 'folder:PATH'") from None
    if not builder.is_prepared():
        needs_network = name.split("/")[0].split(":")[0] not in LOCAL_BUILDERS
        if needs_network and not (download and network_reachable()):
            why = "downloading is off" if not download else "the network is unreachable"
            raise DataError(
                f"dataset {name!r} is not prepared in {builder.data_dir} and {why}. Prepare it on a machine "
                f"with network access (`tfds build {name} --data_dir DIR`), copy DIR here and pass "
                f"--data-dir DIR; or use --dataset folder:PATH, or the offline default {DEFAULT_DATASET!r}")
        try:
            builder.download_and_prepare()
        except Exception as error:  # tfds raises many types: manual downloads, checksums, network
            raise DataError(f"dataset {name!r} could not be prepared in {builder.data_dir}: "
                            f"{' '.join(str(error).split())[:500]}") from None
    return _from_builder(name, builder)


def load_data(dataset: str = DEFAULT_DATASET, data_dir: str | None = None, download: bool = True) -> DataSplits:
    """`folder:PATH` for image folders, else a tfds name (the default works offline)."""
    if dataset.startswith("folder:"):
        return load_folder(dataset[len("folder:"):])
    return load_tfds(dataset, data_dir, download)


def to_model_input(images, size: tuple[int, int], channels: int):
    """uint8 images (batch or single, any size, 1 or 3 channels) -> float32 in [-1, 1] at `size`."""
    x = tf.image.resize(tf.cast(images, tf.float32), size)
    if x.shape[-1] == 1 and channels == 3:
        x = tf.image.grayscale_to_rgb(x)
    elif x.shape[-1] == 3 and channels == 1:
        x = tf.image.rgb_to_grayscale(x)
    return x / 127.5 - 1.0


def paper_crop(image):
    """Random crop covering 8-100 % of the area with aspect ratio 3/4-4/3, then a random flip."""
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4]), area_range=(0.08, 1.0),
        aspect_ratio_range=(3 / 4, 4 / 3), min_object_covered=0.0, max_attempts=10, use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, size)
    crop.set_shape([None, None, image.shape[-1]])
    return tf.image.random_flip_left_right(crop)


def make_pipeline(data: tf.data.Dataset, input_shape: tuple[int, int, int], classes: int, batch_size: int,
                  output_names: tuple[str, ...] = (), training: bool = False, augment: bool = False,
                  num_examples: int | None = None, raw_shape: tuple | None = None, seed: int | None = None):
    """Decode, (augment,) resize, normalize, batch and prefetch; labels one-hot for every output.

    Caches in memory what fits in `CACHE_LIMIT_BYTES`: the resized images without
    augmentation, the raw images (when their size is known) with it.
    """
    size, channels = tuple(input_shape[:2]), input_shape[2]
    if augment:  # the random crop needs the raw images: cache those, when their size is known
        element_bytes = math.prod(raw_shape) if raw_shape else 0
    else:
        element_bytes = size[0] * size[1] * channels * 4
    cache = bool(num_examples and element_bytes and num_examples * element_bytes <= CACHE_LIMIT_BYTES)

    def prepare(image, label):
        return to_model_input(image, size, channels), label

    if not augment:  # deterministic: resize before the cache
        data = data.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        data = data.cache()
    if training:
        data = data.shuffle(min(num_examples or 10_000, 10_000), seed=seed)
    if augment:  # random: after the cache, fresh every epoch
        data = data.map(lambda image, label: prepare(paper_crop(image), label), num_parallel_calls=tf.data.AUTOTUNE)

    def targets(images, labels):
        onehot = tf.one_hot(labels, classes)
        return images, ({name: onehot for name in output_names} if output_names else onehot)

    return data.batch(batch_size).map(targets, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
