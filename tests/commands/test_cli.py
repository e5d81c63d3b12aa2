import json
import subprocess
import sys

import pytest

from inception_keras import get_spec, list_specs, load_spec, network_cost
from inception_keras.cli import main


def test_summary_table_has_table1_columns_and_exact_totals(capsys):
    assert main(["summary", "googlenet"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[1]
    for column in ("type", "patch/stride", "output size", "depth", "#1x1", "#3x3 reduce", "#3x3", "#5x5 reduce",
                   "#5x5", "pool proj", "params", "ops"):
        assert column in header
    row = next(line for line in out.splitlines() if line.startswith("inception (4e)"))
    assert row.split()[2:] == ["14x14x832", "2", "256", "160", "320", "32", "128", "128", "868,352", "169,996,288"]
    assert "6,998,552 params" in out and "13,378,280 params" in out and "1,582,671,872 multiply-adds" in out


def test_summary_json_matches_cost_model_and_overrides(capsys):
    assert main(["summary", "googlenet_bn", "--json", "--input-size", "96", "--classes", "10"]) == 0
    data = json.loads(capsys.readouterr().out)
    cost = network_cost(get_spec("googlenet_bn").with_input_size(96).with_classes(10))
    assert data["total_params"] == cost.total_params and data["inference_macs"] == cost.inference_macs
    assert data["input_shape"] == [96, 96, 3]
    assert set(data["layers"][0]) == {"name", "type", "output_shape", "params", "macs"}
    assert sum(layer["params"] for layer in data["layers"]) == data["total_params"]
    assert data["layers"][-1] == {"name": "predictions", "type": "Dense", "output_shape": [10], "params": 10250,
                                  "macs": 10240}


def test_specs_and_spec_yaml_round_trip(capsys, tmp_path):
    assert main(["specs"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list_specs()
    assert main(["spec", "googlenet_torchvision"]) == 0
    path = tmp_path / "custom.yaml"
    path.write_text(capsys.readouterr().out)
    assert load_spec(path) == get_spec("googlenet_torchvision")
    assert main(["summary", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["inference_params"] == 6_639_464


@pytest.mark.parametrize("args, message", [
    (["summary", "googlenet", "--input-size", "64"], "error: aux_heads[0] (after 4a):"),
    (["summary", "googlenet", "--classes", "1"], "error: head.classes: must be >= 2, got 1"),
    (["summary", "googlenet", "--input-size", "big"], "--input-size: must be a positive integer, got 'big'"),
    (["summary", "no_such_spec"], "error: spec: 'no_such_spec' is neither a registered spec"),
    (["spec", "no_such_spec"], "error: spec: 'no_such_spec' is neither a registered spec"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_input_exits_2_with_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_bad_spec_file_through_the_console_script(tmp_path):
    spec = get_spec("googlenet_mini").to_dict()
    spec["stages"][1]["modules"][0]["ch3x3"] = -4
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    result = subprocess.run([sys.executable, "-m", "inception_keras.cli", "summary", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {path}: stages[1].modules[0].ch3x3: must be > 0, got -4"
    assert "Traceback" not in result.stderr


def test_readme_and_cost_page_match_the_cost_model():
    from pathlib import Path

    from inception_keras.report import paper_comparison_markdown

    root = Path(__file__).parents[2]
    readme = (root / "README.md").read_text()
    cost_page = (root / "docs" / "cost.md").read_text()
    assert paper_comparison_markdown(network_cost(get_spec("googlenet"))) in cost_page
    first_block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in first_block.splitlines()] == ["make demo", "make test"]
    for name in list_specs():
        assert f"`{name}`" in readme


def test_module_entry_point_reports_command_errors_as_one_line(tmp_path):
    """`python -m inception_keras.cli` raises and catches the same CommandError as the console script."""
    result = subprocess.run([sys.executable, "-m", "inception_keras.cli", "export"], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: inception-keras export: give a training run directory, or --check DIR"]


def test_atomic_writes_keep_umask_permissions(tmp_path):
    import os

    from inception_keras.utils.atomic import atomic_write_text

    previous = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "file.txt", "text")
    finally:
        os.umask(previous)
    assert path.read_text() == "text" and (path.stat().st_mode & 0o777) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]
