"""detrx.openvino.library_path() of an install without the extension library: the error says how to
build it. Runs a copy of the module in a folder that holds no library (no OpenVINO needed)."""
import importlib.util
import shutil

import pytest

import detrx.openvino


def test_a_missing_library_is_named_with_the_command_that_builds_it(tmp_path):
    shutil.copy(detrx.openvino.__file__, tmp_path / "openvino_module.py")
    spec = importlib.util.spec_from_file_location("openvino_module_copy", tmp_path / "openvino_module.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    message = r"libdetrx_openvino\.so\) is not built.*pip install -e \"\.\[openvino\]\"\), without DETRX_OPENVINO=0$"
    with pytest.raises(FileNotFoundError, match=message):
        module.library_path()
