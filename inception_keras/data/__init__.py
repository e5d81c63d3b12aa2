"""Input data: tensorflow-datasets by name, image folders, and the embedded offline default.

The training pipeline follows Szegedy et al. (2015), section 6: optional random crops
covering 8-100 % of the image with aspect ratio 3/4-4/3, and horizontal flips.
Images become float32 in [-1, 1] (`to_model_input`, shared with the SavedModel
export); each label goes to every model output (`predictions`, `aux_1`, `aux_2`).

Loading checks what it can cheaply (the name, the splits, at least two classes); an image
that cannot be decoded shows only while the pipeline runs: `reading_images(data)` around
`model.fit` turns that failure into a DataError naming the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf
import tensorflow_datasets as tfds

from inception_keras.data.cluttered import ClutteredDigits
from inception_keras.data.digits import SklearnDigits
from inception_keras.utils.errors import UserError, error_text
from inception_keras.utils.image_header import MAX_IMAGE_PIXELS, image_problem

DEFAULT_DATASET = "sklearn_digits"
# prepared from installed packages, no network
LOCAL_BUILDERS = {"sklearn_digits": SklearnDigits, "cluttered_digits": ClutteredDigits}
VALIDATION_SPLITS = ("validation", "val", "test")
CACHE_LIMIT_BYTES = 1 << 30
NETWORK_PROBE = ("storage.googleapis.com", 443)
FOLDER_PREFIX = "folder:"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # what tfds' ImageFolder reads
TFDS_NAME = re.compile(r"(?P<name>[A-Za-z][A-Za-z0-9_]*)(?:/(?P<config>[A-Za-z0-9_+.-]+))?(?::(?P<version>[^/]*))?")
TFDS_VERSION = re.compile(r"(?:0|[1-9][0-9]*|\*)(?:\.(?:0|[1-9][0-9]*|\*)){2}")
READ_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.DataLossError,
               tf.errors.PermissionDeniedError)  # what an unreadable image or record raises in a pipeline
NAME_FORMS = "NAME, NAME/CONFIG or NAME:VERSION (e.g. 'mnist', 'mnist:3.0.1'), or folder:PATH for an image folder"


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
    builder: object = None  # the tfds builder, when its splits can be sliced (for `shard`)
    validation_split: str = ""
    max_image_pixels: int = MAX_IMAGE_PIXELS  # images with more are refused before decoding (image folders)


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


def _check_classes(name: str, class_names: list[str]) -> None:
    if len(class_names) < 2:
        listed = f" ({', '.join(map(repr, class_names))})" if class_names else ""
        raise DataError(f"dataset {name!r} has {len(class_names)} class{'' if len(class_names) == 1 else 'es'}"
                        f"{listed}; a classifier needs at least 2")


def _from_builder(name: str, builder, read=None) -> DataSplits:
    """Train and validation splits of a prepared builder.

    A builder whose info lists no splits (tfds' mock data) is read as train/test. `read(split, shuffle_files)`
    gives a split's `(image, label)` dataset (default: the builder's own decoding).
    """
    splits = builder.info.splits
    known = list(splits) or ["train", "test"]
    if "train" not in known:
        raise DataError(f"dataset {name!r} has splits {sorted(known)}; need a 'train' split")
    validation = _pick_validation(name, known)
    for split in ("train", validation) if splits else ():
        if not splits[split].num_examples:
            raise DataError(f"dataset {name!r}: its {split!r} split holds no examples")
    features = builder.info.features
    image, label = builder.info.supervised_keys or ("image", "label")
    if image not in features or label not in features or not hasattr(features[label], "names"):
        raise DataError(f"dataset {name!r} is not an image classification dataset: it needs an image feature and "
                        f"a ClassLabel (supervised keys {image!r}, {label!r}); features are {list(features)}")
    _check_classes(name, list(features[label].names))
    shape = tuple(features[image].shape)
    read = read or (lambda split, shuffle_files: builder.as_dataset(split=split, as_supervised=True,
                                                                     shuffle_files=shuffle_files))
    try:
        train, val = read("train", True), read(validation, False)
    except Exception as error:  # tfds raises many types for missing or damaged prepared files
        raise DataError(f"dataset {name!r} cannot be read from {builder.data_dir} ({error_text(error, 200)}); "
                        f"prepare it again") from None
    return DataSplits(
        name=name, train=train, validation=val,
        class_names=list(features[label].names),
        train_size=splits["train"].num_examples if splits else _count(train),
        validation_size=splits[validation].num_examples if splits else _count(val),
        image_shape=shape if None not in shape else None,
        builder=builder if splits and not isinstance(builder, tfds.ImageFolder) else None,
        validation_split=validation,
    )


def _folder_layout(root: Path) -> str:
    return f"expected {root}/train/LABEL/*.png|jpg and {root}/validation/LABEL/*.png|jpg, one folder per class"


def _check_folder_splits(root: Path, splits) -> None:
    """A DataError unless `root` has a train split and a validation split with images in class folders."""
    validation = next((s for s in VALIDATION_SPLITS if s in splits), None)
    validation_folder = validation or next((s for s in VALIDATION_SPLITS if (root / s).is_dir()), "validation")
    for split, folder in (("train", "train"), (validation, validation_folder)):
        if split in splits and splits[split].num_examples:
            continue
        empty = (root / folder).is_dir()
        where = f"{folder}/ holds no images in class folders" if empty else f"has no {folder}/ folder"
        raise DataError(f"image folder {str(root)!r}: {where}; {_folder_layout(root)}")


def _bounded_reader(builder, max_image_pixels: int):
    """`read(split, shuffle_files)` for `_from_builder`: an ImageFolder's images decoded by `decode_bounded`."""
    def read(split: str, shuffle_files: bool) -> tf.data.Dataset:
        raw = builder.as_dataset(split=split, shuffle_files=shuffle_files,
                                 decoders={"image": tfds.decode.SkipDecoding()})
        return raw.map(lambda example: (decode_bounded(example["image"], max_image_pixels), example["label"]),
                       num_parallel_calls=tf.data.AUTOTUNE)

    return read


def load_folder(root: str | Path, max_image_pixels: int = MAX_IMAGE_PIXELS) -> DataSplits:
    """Images laid out `root/split/label/*.png|jpg` through tfds' ImageFolder; an image of more than
    `max_image_pixels` is refused before it is decoded (when the pipeline reaches it; see `reading_images`)."""
    if not str(root):
        raise DataError(f"{FOLDER_PREFIX} needs a path: --dataset folder:PATH, with PATH/train/LABEL/*.png|jpg")
    root = Path(root)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise DataError(f"image folder {str(root)!r} {what}; {_folder_layout(root)}")
    try:
        builder = tfds.ImageFolder(str(root))
    except Exception as error:  # tfds raises several types for a bad layout
        raise DataError(f"image folder {str(root)!r}: {error_text(error)}") from None
    _check_folder_splits(root, builder.info.splits)
    data = _from_builder(f"{FOLDER_PREFIX}{root}", builder, _bounded_reader(builder, max_image_pixels))
    return dataclasses.replace(data, max_image_pixels=max_image_pixels)


def check_tfds_name(name: str) -> None:
    """A DataError unless `name` is NAME[/CONFIG][:VERSION] as tensorflow-datasets spells them (no namespaces)."""
    if not name.strip():
        raise DataError(f"the dataset name is empty; give {NAME_FORMS}, or the embedded default {DEFAULT_DATASET!r}")
    match = TFDS_NAME.fullmatch(name)
    if not match:
        raise DataError(f"dataset name {name!r} is not {NAME_FORMS}")
    version = match.group("version")
    if version is not None and not TFDS_VERSION.fullmatch(version):
        raise DataError(f"dataset {name!r}: version {version!r} is not MAJOR.MINOR.PATCH (e.g. "
                        f"'{match.group('name')}:1.0.0')")


def _builder(name: str, data_dir: str | None):
    check_tfds_name(name)
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(f"no tensorflow-datasets dataset named {name!r}; the embedded default is "
                        f"{DEFAULT_DATASET!r}, image folders are 'folder:PATH'") from None
    except Exception as error:  # tfds raises AssertionError (version), ValueError (config), OSError, ...
        why = re.sub(r'^Failed to construct dataset "[^"]*", builder_kwargs "[^"]*": ', "", error_text(error, 1000))
        raise DataError(f"dataset {name!r}: {error_text(why)}") from None


def load_tfds(name: str, data_dir: str | None = None, download: bool = True) -> DataSplits:
    """A tfds dataset by name; fails within seconds, with instructions, when it cannot be had."""
    builder = _builder(name, data_dir)
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


def load_data(dataset: str = DEFAULT_DATASET, data_dir: str | None = None, download: bool = True,
              max_image_pixels: int = MAX_IMAGE_PIXELS) -> DataSplits:
    """`folder:PATH` for image folders (images of more than `max_image_pixels` refused), else a tfds name (the
    default works offline).

    Raises:
        DataError: a malformed or unknown name, a dataset that cannot be had, an empty split,
            or fewer than 2 classes.
    """
    if dataset.startswith(FOLDER_PREFIX):
        return load_folder(dataset[len(FOLDER_PREFIX):], max_image_pixels)
    return load_tfds(dataset, data_dir, download)


def _folder_images(root: Path):
    """The files tfds' ImageFolder reads under `root` (split/label/*.png|jpg|jpeg), in sorted order."""
    for split in sorted(p for p in root.iterdir() if p.is_dir()):
        for label in sorted(p for p in split.iterdir() if p.is_dir()):
            yield from sorted(p for p in label.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES))


def why_unreadable(path: Path, max_image_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """Why `path` is not decoded as an image the way an image folder's pipeline does, or None if it is."""
    try:
        data = path.read_bytes()
        problem = image_problem(data, max_image_pixels)
        if problem is None:
            tf.io.decode_image(data, channels=3, expand_animations=False)
    except OSError as error:
        return error.strerror or str(error)
    except tf.errors.OpError as error:
        return error_text(error, 150)
    return problem


def find_unreadable_image(dataset: str, max_image_pixels: int = MAX_IMAGE_PIXELS) -> tuple[Path, str] | None:
    """The first image of a `folder:PATH` dataset that is not decoded, and why; None if every one is.

    Decodes every image of the folder, so call it after a failure, not on every load.
    """
    if not dataset.startswith(FOLDER_PREFIX):
        return None
    root = Path(dataset[len(FOLDER_PREFIX):])
    try:
        images = list(_folder_images(root))
    except OSError:
        return None
    for path in images:
        why = why_unreadable(path, max_image_pixels)
        if why is not None:
            return path, why
    return None


def data_error(dataset: str, error: BaseException, max_image_pixels: int = MAX_IMAGE_PIXELS) -> DataError | None:
    """The DataError that `error`, raised while iterating `dataset`'s pipeline, stands for; None if not the data's.

    A folder dataset is scanned for the image that cannot be decoded; a tfds dataset's
    damaged prepared file (DataLossError) is named by TensorFlow's message.
    """
    if not isinstance(error, READ_ERRORS):
        return None
    found = find_unreadable_image(dataset, max_image_pixels)
    if found is not None:
        path, why = found
        return DataError(f"dataset {dataset!r}: cannot read image {path} ({why}): remove or replace it")
    if isinstance(error, tf.errors.DataLossError):
        return DataError(f"dataset {dataset!r}: a prepared file is damaged ({error_text(error, 200)}); delete it "
                         f"from the data directory and prepare the dataset again")
    return None


@contextlib.contextmanager
def reading_images(data: DataSplits):
    """Turn a failure to read `data`'s images inside the block (e.g. `model.fit`) into a DataError naming the file.

    Example:
        with reading_images(data):
            model.fit(make_pipeline(data.train, ...), ...)
    """
    try:
        yield
    except tf.errors.OpError as error:
        problem = data_error(data.name, error, data.max_image_pixels)
        if problem is None:
            raise
        raise problem from None


def decode_bounded(data: tf.Tensor, max_image_pixels: int = MAX_IMAGE_PIXELS) -> tf.Tensor:
    """uint8 RGB [H, W, 3] from encoded image bytes (a string tensor, in a tf.data pipeline), as tfds decodes an
    image folder's; an image that `image_problem` refuses raises InvalidArgumentError before it is decoded."""
    def check(raw: bytes) -> bool:
        problem = image_problem(raw, max_image_pixels)
        if problem is not None:
            raise ValueError(problem)
        return True

    checked = tf.numpy_function(check, [data], tf.bool)
    with tf.control_dependencies([checked]):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


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
                  num_examples: int | None = None, raw_shape: tuple | None = None, seed: int | None = None,
                  drop_remainder: bool = False):
    """Decode, (augment,) resize, normalize, batch and prefetch; labels one-hot for every output.

    `drop_remainder`: only full batches (data parallelism across processes needs equal steps).

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

    batched = data.batch(batch_size, drop_remainder=drop_remainder)
    return batched.map(targets, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def training_pipelines(data: DataSplits, input_shape: tuple[int, int, int], classes: int, batch_size: int,
                       output_names: tuple[str, ...] = (), augment: bool = False, seed: int | None = None,
                       drop_remainder: bool = False):
    """(train dataset, validation dataset, steps per epoch) for a model of `input_shape` and `classes`."""
    pipeline = dict(input_shape=input_shape, classes=classes, batch_size=batch_size, output_names=output_names,
                    raw_shape=data.image_shape, drop_remainder=drop_remainder)
    train = make_pipeline(data.train, training=True, augment=augment, num_examples=data.train_size, seed=seed,
                          **pipeline)
    validation = make_pipeline(data.validation, num_examples=data.validation_size, **pipeline)
    steps = data.train_size // batch_size if drop_remainder else -(-data.train_size // batch_size)
    return train, validation, steps


def shard(data: DataSplits, count: int, index: int) -> DataSplits:
    """Process `index` of `count`'s part of `data`, for data-parallel training in several processes.

    tfds datasets are read as even sub-splits (`tfds.even_splits`), so each process reads only its own
    examples; image folders take every `count`-th image after the listing. Every process keeps the
    same number of examples (the smallest part's), so all take the same number of steps.
    """
    if count == 1:
        return data
    if data.builder is not None:
        parts = {name: tfds.even_splits(name, count) for name in ("train", data.validation_split)}
        sizes = {name: [data.builder.info.splits[part].num_examples for part in split]
                 for name, split in parts.items()}
        train = data.builder.as_dataset(split=parts["train"][index], as_supervised=True, shuffle_files=True)
        validation = data.builder.as_dataset(split=parts[data.validation_split][index], as_supervised=True)
        train_size, validation_size = min(sizes["train"]), min(sizes[data.validation_split])
    else:
        train, validation = data.train.shard(count, index), data.validation.shard(count, index)
        train_size, validation_size = data.train_size // count, data.validation_size // count
    if not train_size or not validation_size:
        raise DataError(f"dataset {data.name!r} is too small to share among {count} processes")
    return dataclasses.replace(data, train=train.take(train_size), validation=validation.take(validation_size),
                               train_size=train_size, validation_size=validation_size)


def require_classes(classes: int, data: DataSplits, what: str, hint: str = "") -> None:
    """A DataError unless `what` (a spec, a search space, `--classes N`) has as many classes as `data`."""
    if classes != len(data.class_names):
        raise DataError(f"{what} has {classes} classes but dataset {data.name!r} has {len(data.class_names)}"
                        f"{'; ' + hint if hint else ''}")
