from inception_keras.cli import main


def test_train_then_export_from_the_cli(image_folder, tmp_path, capsys):
    out, exports = tmp_path / "run", tmp_path / "saved"
    args = ["train", "googlenet_mini", "--dataset", f"folder:{image_folder}", "--input-size", "24", "--epochs", "2",
            "--batch-size", "8", "--optimizer", "adam", "--out", str(out), "--export", "--export-dir", str(exports)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "has 3 classes: using a 3-class head" in printed
    assert "best val_predictions_accuracy:" in printed and "images/s" in printed
    assert f"TensorBoard logs: {out / 'logs'}" in printed
    assert f"exported {exports / 'googlenet_mini' / '1'} (version 1)" in printed
    assert main(["export", str(out), "--base-dir", str(exports), "--name", "colours"]) == 0
    assert (exports / "colours" / "1" / "saved_model.pb").exists()
    capsys.readouterr()
    assert main(args[:2] + ["--classes", "5"] + args[2:]) == 2
    assert "--classes 5 has 5 classes but dataset" in capsys.readouterr().err
    assert main(args) == 2
    assert "holds a finished training" in capsys.readouterr().err


def test_cli_data_errors_are_one_line_and_fast(tmp_path, capsys, monkeypatch):
    import tensorflow_datasets as tfds

    import inception_keras.data as data_module

    probes, downloads = [], []
    probe = data_module.network_reachable
    monkeypatch.setattr(data_module, "network_reachable", lambda timeout=3.0: probes.append(timeout) or probe(timeout))
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", lambda *a, **k: downloads.append(1))
    assert main(["train", "googlenet_mini", "--dataset", "mnist", "--data-dir", str(tmp_path)]) == 2
    # one network probe of at most 3 s, and no tfds download (which retries for ~205 s offline)
    assert probes == [3.0] and downloads == []
    err = capsys.readouterr().err
    assert err.startswith("error: dataset 'mnist' is not prepared in") and len(err.strip().splitlines()) == 1
    assert main(["train", "googlenet_mini", "--label-smoothing", "2"]) == 2
    assert "--label-smoothing: must be a number in [0, 1), got '2'" in capsys.readouterr().err
    assert main(["export", str(tmp_path)]) == 2
    assert "is not a finished training run: missing best.keras" in capsys.readouterr().err
