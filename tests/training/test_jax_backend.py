"""The JAX backend end to end (tests/scripts/jax_end_to_end.py in a JAX process), compared here on TensorFlow:
cost == count_params, fit with aux losses and the standard callbacks, resume, a search trial, and a SavedModel
that passes --check and serves what the TensorFlow-backend export of the same weights serves."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from inception_keras.cli import main
from inception_keras.export import export_saved_model, load_run

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("jax", reason="the JAX backend needs jax (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def jax_run(digits_dir, tmp_path_factory):
    """The script's run, once per session (a pytest-xdist worker that comes second reads what the first left)."""
    from conftest import shared

    with shared(tmp_path_factory, "jax") as out:
        if not (out / "finished.json").exists():
            out.mkdir(exist_ok=True)
            result = subprocess.run([sys.executable, str(ROOT / "tests" / "scripts" / "jax_end_to_end.py"),
                                     digits_dir, str(out)], capture_output=True, text=True, timeout=900, cwd=ROOT,
                                    env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})
            (out / "finished.json").write_text(json.dumps([result.returncode, result.stdout, result.stderr]))
        code, stdout, stderr = json.loads((out / "finished.json").read_text())
    assert code == 0, stdout[-3000:] + stderr[-3000:]
    checks = dict(json.loads(line[len("CHECK "):]) for line in stdout.splitlines() if line.startswith("CHECK "))
    return out, checks, stdout + stderr


def test_runs_on_jax(jax_run):
    _, checks, _ = jax_run
    assert checks["backend"] == "jax"


def test_cost_model_equals_count_params_on_jax(jax_run):
    _, checks, _ = jax_run
    counts = {name: value for name, value in checks.items() if name.startswith("params ")}
    assert len(counts) == 4
    for name, (cost, keras_count, layers_that_differ) in counts.items():
        assert cost == keras_count and layers_that_differ == [], name
    assert counts["params googlenet aux=True"][1] == 13_378_280  # the paper's net with both aux classifiers


def test_lrn_written_out_gradient_equals_the_automatic_one_on_jax(jax_run):
    _, checks, _ = jax_run
    output_diff, gradient_diff, gradient_size = checks["lrn xla vs op by op"]
    assert output_diff < 1e-5 and gradient_diff < 1e-5 * gradient_size and gradient_size > 0.1


def test_fit_with_aux_losses_callbacks_and_resume_on_jax(jax_run):
    out, checks, _ = jax_run
    assert checks["interrupted"] == 1
    assert checks["resumed"] == [1, 2, 3]
    assert checks["aux losses"] == ["aux_1_loss", "aux_2_loss"]
    assert len(checks["history"]) == 3 and checks["history"][-1] > 0.3  # 10 classes: chance is 0.1
    run = out / "run"
    assert {"best.keras", "history.csv", "summary.json", "run.json"} <= {p.name for p in run.iterdir()}
    assert not (run / "backup").exists()


def test_search_trial_on_jax(jax_run):
    _, checks, _ = jax_run
    assert checks["search"] == [1, True]


def test_jax_export_passes_check_and_equals_the_tensorflow_export(jax_run, tmp_path, capsys):
    out, checks, _ = jax_run
    path, diff = checks["export"]
    assert diff <= 1e-5 and checks["export check"] <= 1e-5
    loaded = tf.saved_model.load(path)
    assert {"serving_default", "serve_float"} <= set(loaded.signatures)
    assert main(["export", "--check", path]) == 0
    assert "OK, max abs diff" in capsys.readouterr().out

    model, spec, names = load_run(out / "run")  # the same best.keras, on the TensorFlow backend
    tf_export = tf.saved_model.load(export_saved_model(model, spec, names, tmp_path / "saved").path)
    images = tf.constant(np.random.default_rng(3).integers(0, 256, (4, 45, 37, 3), dtype=np.uint8))
    from_jax, from_tf = loaded.serving_default(images), tf_export.serving_default(images)
    assert np.abs(from_jax["probabilities"].numpy() - from_tf["probabilities"].numpy()).max() < 1e-5
    assert np.array_equal(from_jax["top_k_ids"].numpy(), from_tf["top_k_ids"].numpy())


def test_elastic_training_resumes_its_sampler_and_its_children_are_first_channels_on_jax(jax_run):
    _, checks, _ = jax_run
    drawn, resumed_from, losses = checks["elastic"]
    assert resumed_from == 1 and drawn == [0, 256 // 32]  # the second run draws on from epoch 1's 8 steps
    assert len(losses) == 2 and np.all(np.isfinite(losses))  # both epochs in the resumed history
    kept, diff = checks["elastic child"]
    assert kept != [1, 2, 4] and diff < 1e-5  # a sampled child (not the smallest), equal to the narrowed network
