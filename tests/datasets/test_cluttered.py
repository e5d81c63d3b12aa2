"""cluttered_digits: deterministic generation, disjoint source splits, the tfds registration, its search space."""

import hashlib

import numpy as np
import pytest

from inception_keras import network_cost

from inception_keras.data import cluttered
from inception_keras.data.cluttered import generate, source_digits, source_split
from inception_keras.data import load_data


@pytest.fixture(scope="module")
def sources():
    images, labels = source_digits()
    train, validation = source_split(labels)
    return images, labels, train, validation


def _digest(*arrays) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()


def test_generating_twice_gives_identical_arrays(sources):
    images, labels, train, _ = sources
    first = generate(images, labels, train, 30, seed=1)
    assert _digest(*first) == _digest(*generate(images, labels, train, 30, seed=1))
    assert _digest(*first) != _digest(*generate(images, labels, train, 30, seed=2))


def test_source_split_is_disjoint_stratified_and_fixed(sources):
    _, labels, train, validation = sources
    assert not set(train) & set(validation)
    assert sorted(np.concatenate([train, validation])) == list(range(1797))
    assert (len(train), len(validation)) == (1437, 360)
    assert set(labels[validation]) == set(range(10))
    assert np.array_equal(source_split(labels)[1], validation)


def test_canvases_draw_only_on_their_sources(sources, monkeypatch):
    images, labels, _, validation = sources
    others = np.ones_like(images)  # any pixel of a non-source image would show as ink
    others[validation] = 0
    monkeypatch.setattr(cluttered, "STROKES", (0, 0))
    monkeypatch.setattr(cluttered, "NOISE_STD", (0.0, 0.0))
    canvases, _ = generate(others, labels, validation, 20, seed=3)
    assert (canvases == canvases[:, :1, :1]).all()  # each canvas is its background alone


def test_shapes_labels_and_class_balance(sources):
    images, labels, train, _ = sources
    canvases, targets = generate(images, labels, train, 50, seed=1)
    assert canvases.shape == (50, 40, 40, 1) and canvases.dtype == np.uint8
    assert targets.dtype == np.int64 and np.bincount(targets, minlength=10).tolist() == [5] * 10
    assert canvases.std() > 20  # not blank: digits, clutter and noise


def test_half_the_canvases_are_inverted_dark_ink_on_a_light_ground(sources, monkeypatch):
    images, labels, train, _ = sources
    for name, value in (("FRAGMENTS", (0, 0)), ("STROKES", (0, 0)), ("NOISE_STD", (0.0, 0.0))):
        monkeypatch.setattr(cluttered, name, value)
    canvases, _ = generate(images, labels, train, 200, seed=1)
    ground = np.median(canvases.reshape(200, -1), axis=1)  # the digit covers well under half the canvas
    light = ground > 127  # BACKGROUND <= 0.4: a plain canvas's ground is at most 102
    assert 70 <= light.sum() <= 130
    assert (canvases[light].reshape(light.sum(), -1).min(axis=1) < ground[light] - 60).all()  # dark ink
    assert (canvases[~light].reshape((~light).sum(), -1).max(axis=1) > ground[~light] + 60).all()  # light ink
    monkeypatch.setattr(cluttered, "INVERTED", 0.0)
    assert (np.median(generate(images, labels, train, 50, seed=1)[0].reshape(50, -1), axis=1) <= 102).all()


def test_generating_a_small_count_draws_only_those_canvases(sources, monkeypatch):
    images, labels, train, _ = sources
    drawn = []
    canvas = cluttered._canvas
    monkeypatch.setattr(cluttered, "_canvas", lambda *args: drawn.append(1) or canvas(*args))
    generate(images, labels, train, 200, seed=1)
    assert len(drawn) == 200  # the work is the count asked for, not the split's 12,000


def test_load_data_prepares_it_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(cluttered, "TRAIN_COUNT", 20)
    monkeypatch.setattr(cluttered, "VALIDATION_COUNT", 10)
    data = load_data("cluttered_digits", str(tmp_path), download=False)
    assert (data.train_size, data.validation_size, data.validation_split) == (20, 10, "validation")
    assert data.image_shape == (40, 40, 1) and data.class_names == [str(d) for d in range(10)]
    image, label = next(iter(data.validation))
    expected, _ = cluttered.cluttered_split("validation", 10)
    assert any(np.array_equal(image.numpy(), canvas) for canvas in expected) and 0 <= int(label) < 10


def test_cluttered_bottlenecks_space_holds_the_base_and_a_far_narrower_net():
    from search.space import get_space

    space = get_space("cluttered_bottlenecks")
    base = network_cost(space.base).inference_params
    narrowest = network_cost(space.spec_for(space.smallest())).inference_params
    assert space.base.name == "googlenet_mini" and base <= space.budget.max_params
    assert all(value in dim.values for dim, value in zip(space.dimensions, space.base_values().values()))
    assert narrowest * 3 < base
