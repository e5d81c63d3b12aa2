
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from inception_keras import data as data_module
from inception_keras.data import DataError, load_data, make_pipeline, paper_crop, to_model_input


def test_embedded_default_loads_by_name_offline(digits_dir):
    from sklearn.datasets import load_digits

    import inception_keras.data.digits  # noqa: F401  registers the builder

    train, info = tfds.load("sklearn_digits", split="train", data_dir=digits_dir, with_info=True)
    assert (info.splits["train"].num_examples, info.splits["test"].num_examples) == (1437, 360)
    assert info.features["label"].num_classes == 10
    reference = load_digits()
    images = np.round(reference.images * (255 / 16)).astype(np.uint8)
    for example in train.take(5):
        image, label = example["image"].numpy(), int(example["label"])
        matches = np.flatnonzero((images == image[..., 0]).all(axis=(1, 2)))
        assert len(matches) >= 1 and label in reference.target[matches]


def test_image_folder_and_pipeline(image_folder):
    data = load_data(f"folder:{image_folder}")
    assert data.class_names == ["blue", "green", "red"]
    assert (data.train_size, data.validation_size) == (24, 12)
    pipeline = make_pipeline(data.train, (32, 32, 3), 3, batch_size=5, output_names=("predictions", "aux_1", "aux_2"),
                             training=True, num_examples=data.train_size)
    images, targets = next(iter(pipeline))
    assert images.shape == (5, 32, 32, 3) and images.dtype == tf.float32
    assert -1.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
    assert sorted(targets) == ["aux_1", "aux_2", "predictions"]
    np.testing.assert_array_equal(targets["predictions"], targets["aux_2"])
    np.testing.assert_array_equal(tf.reduce_sum(targets["predictions"], axis=1), np.ones(5))
    single = make_pipeline(data.validation, (16, 16, 1), 3, batch_size=12, augment=True, raw_shape=None)
    images, labels = next(iter(single))
    assert images.shape == (12, 16, 16, 1) and labels.shape == (12, 3)


def test_tfds_dataset_through_mock_data(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "network_reachable", lambda timeout=3.0: True)
    with tfds.testing.mock_data(num_examples=12):
        data = load_data("mnist", str(tmp_path))
        assert (data.train_size, data.validation_size, len(data.class_names)) == (12, 12, 10)
        images, labels = next(iter(make_pipeline(data.train, (32, 32, 3), 10, batch_size=4)))
    assert images.shape == (4, 32, 32, 3) and labels.shape == (4, 10)


def test_offline_failure_is_fast_and_says_what_to_do(tmp_path, monkeypatch):
    probes, downloads = [], []
    probe = data_module.network_reachable
    monkeypatch.setattr(data_module, "network_reachable", lambda timeout=3.0: probes.append(timeout) or probe(timeout))
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", lambda *a, **k: downloads.append(1))
    with pytest.raises(DataError) as info:
        load_data("mnist", str(tmp_path))
    # one network probe of at most 3 s, and no tfds download (which retries for ~205 s offline)
    assert probes == [3.0] and downloads == []
    message = str(info.value)
    assert "'mnist'" in message and str(tmp_path) in message and "tfds build mnist" in message
    with pytest.raises(DataError, match="downloading is off"):
        load_data("mnist", str(tmp_path), download=False)


@pytest.mark.parametrize("dataset, message", [
    ("no_such_dataset_xyz", "no tensorflow-datasets dataset named 'no_such_dataset_xyz'"),
    ("folder:/nonexistent/images", "image folder '/nonexistent/images' does not exist"),
])
def test_bad_dataset_names(dataset, message):
    with pytest.raises(DataError, match=message):
        load_data(dataset)


def test_paper_crop_area_and_aspect():
    image = tf.zeros((100, 120, 3), tf.uint8)
    for _ in range(50):
        h, w, _ = paper_crop(image).shape
        assert 0.08 * 100 * 120 * 0.85 <= h * w <= 100 * 120
        assert 0.6 <= w / h <= 1.6


def test_to_model_input_converts_channels_and_range():
    grey = tf.fill((2, 8, 8, 1), tf.constant(255, tf.uint8))
    out = to_model_input(grey, (16, 16), 3)
    assert out.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(out, 1.0)
    rgb = tf.zeros((1, 10, 10, 3), tf.uint8)
    np.testing.assert_allclose(to_model_input(rgb, (4, 4), 1), -1.0)
