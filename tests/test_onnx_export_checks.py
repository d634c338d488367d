"""detrx.onnx.export's checks of the written file: every axis asked to be dynamic is dynamic in the
graph, and check_inputs runs the file at other sizes before export returns."""
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

import detrx  # noqa: E402

if not detrx.is_compiled():
    pytest.skip("detrx.onnx needs the compiled op", allow_module_level=True)
import detrx.onnx  # noqa: E402

Dim = torch.export.Dim


class FourByFour(torch.nn.Module):
    """Only a width of 16 works: torch.export rejects any range for it."""

    def forward(self, x):  # [B, 16] -> [B, 4, 4]
        return x.reshape(x.shape[0], 4, 4) * 2


class SumPairs(torch.nn.Module):
    def forward(self, x, y):  # [B, W], [B, W] -> [B, W]
        return x + y


class ConstantHalf(torch.nn.Module):
    """int() of a size derived from the input's (as model code that computes a feature-map size in
    Python does) becomes a constant in the exported graph, and torch.export says nothing: the file
    runs at every width, but gives the export width's output shape."""

    def forward(self, x):  # [B, W] -> [B, W // 2]
        half = int(x.shape[1] // 2)
        return x[:, :half] * 2


def test_a_named_dim_that_export_drops_is_an_error_naming_the_axis(tmp_path):
    with pytest.raises(ValueError, match=r"input 'x' axis 1 \(width\) was fixed to 16"):
        detrx.onnx.export(FourByFour().eval(), (torch.rand(2, 16),), tmp_path / "m.onnx", input_names=["x"],
                          dynamic_shapes=({0: Dim("batch"), 1: Dim("width", min=2, max=64)},))
    assert not (tmp_path / "m.onnx").exists()
    # the same model with only the batch dynamic exports, and so does a dict spec by argument name
    program = detrx.onnx.export(FourByFour().eval(), (torch.rand(2, 16),), dynamic_shapes={"x": {0: Dim("batch")}})
    assert not isinstance(program.model.graph.inputs[0].shape[0], int)


def test_dynamic_axes_of_every_input_are_checked(tmp_path):
    width = Dim("width", min=2, max=64)
    program = detrx.onnx.export(SumPairs().eval(), (torch.rand(2, 8), torch.rand(2, 8)),
                                dynamic_shapes=({1: width}, {1: width}))
    assert [isinstance(value.shape[1], int) for value in program.model.graph.inputs] == [False, False]
    assert [value.shape[0] for value in program.model.graph.inputs] == [2, 2]  # not asked: fixed, no error


def test_check_inputs_run_the_file_at_another_size(tmp_path):
    path = tmp_path / "ramp.onnx"
    dynamic = ({0: Dim.DYNAMIC, 1: Dim.DYNAMIC},)
    detrx.onnx.export(ConstantHalf().eval(), (torch.rand(2, 8),), path, dynamic_shapes=dynamic,
                      check_inputs=[(torch.rand(3, 9),)])  # the same half width: right
    with pytest.raises(ValueError, match=r"does not run in onnxruntime at input shapes \[\[1, 5\]\].*shape"):
        detrx.onnx.export(ConstantHalf().eval(), (torch.rand(2, 8),), path, dynamic_shapes=dynamic,
                          check_inputs=[(torch.rand(1, 5),)])
