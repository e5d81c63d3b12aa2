"""inception_keras.utils.cpu: instruction-set flags, native bf16, and oneDNN turned on where TensorFlow leaves it
off."""

import os
import subprocess
import sys

import pytest

from inception_keras.utils.cpu import (ONEDNN_VARIABLE, OneDNNOffWarning, cpu_flags, native_bf16, prefer_onednn,
                                      warn_if_onednn_off)

ZEN1 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: x\n"
ZEN5 = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16\n"
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: avx2 avx512f amx_bf16 amx_tile\n"


@pytest.mark.parametrize("text, expected", [(ZEN1, False), (ZEN5, True), (SAPPHIRE_RAPIDS, True)])
def test_flags_of_the_first_processor_and_native_bf16(tmp_path, text, expected):
    (tmp_path / "cpuinfo").write_text(text)
    flags = cpu_flags(str(tmp_path / "cpuinfo"))
    assert "avx2" in flags and "x" not in flags
    assert native_bf16(flags, "x86_64") is expected


def test_unknown_when_there_is_nothing_to_read(tmp_path):
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()
    assert native_bf16(frozenset(), "x86_64") is None
    assert native_bf16(frozenset({"bf16"}), "aarch64") is None


def test_onednn_is_preferred_only_on_x86_before_tensorflow_and_when_unset():
    environ = {}
    assert prefer_onednn(environ, modules={}, machine="x86_64") and environ == {ONEDNN_VARIABLE: "1"}
    environ = {ONEDNN_VARIABLE: "0"}  # the user's choice stands
    assert not prefer_onednn(environ, modules={}, machine="x86_64") and environ == {ONEDNN_VARIABLE: "0"}
    for modules, machine in (({"tensorflow": object()}, "x86_64"), ({}, "aarch64")):
        environ = {}
        assert not prefer_onednn(environ, modules=modules, machine=machine) and environ == {}


def _onednn_in_a_fresh_process(environ) -> str:
    code = ("import inception_keras, tensorflow\n"
            "from tensorflow.python.util import _pywrap_util_port\n"
            "print(_pywrap_util_port.IsMklEnabled())")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "AMD64"), reason="oneDNN's default is x86's")
def test_importing_the_package_first_turns_tensorflows_onednn_on():
    environ = {key: value for key, value in os.environ.items() if key != ONEDNN_VARIABLE}
    assert _onednn_in_a_fresh_process(environ) == "True"
    assert _onednn_in_a_fresh_process({**environ, ONEDNN_VARIABLE: "0"}) == "False"


def test_a_late_import_warns_once_where_tensorflow_left_onednn_off():
    zen3, tf = frozenset({"avx2", "fma"}), {"tensorflow": object()}
    with pytest.warns(OneDNNOffWarning, match="TF_ENABLE_ONEDNN_OPTS=1 .* import inception_keras before keras"):
        assert warn_if_onednn_off({}, tf, "x86_64", zen3, enabled=lambda: False)
    quiet = [({}, {}, "x86_64", zen3, False),  # TensorFlow not imported yet: prefer_onednn's case
             ({ONEDNN_VARIABLE: "0"}, tf, "x86_64", zen3, False),  # the user's choice
             ({}, tf, "aarch64", zen3, False),
             ({}, tf, "x86_64", frozenset({"avx2", "avx512_vnni"}), False),  # TensorFlow turns it on there
             ({}, tf, "x86_64", zen3, True)]  # on after all
    for environ, modules, machine, flags, on in quiet:
        assert not warn_if_onednn_off(environ, modules, machine, flags, enabled=lambda on=on: on)
