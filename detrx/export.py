"""Export a trained detrx detector to ONNX: `python -m detrx.export --checkpoint run/checkpoint.pth
--out model.onnx [--dynamic] [--postprocess]`.

The graph is the model's inference graph (DN models have no DN queries at inference): input
`images` [B, 3, H, W]; outputs `logits` [B, Q, K] and `boxes` [B, Q, 4] (normalised cx, cy, w, h),
or with --postprocess `scores`, `labels` and `boxes` (x0, y0, x1, y1 in input pixels). MSDA is
written in standard ONNX ops (no GridSample, no plugin), so onnxruntime runs the file as it is;
--runtime-op writes it instead as one `detrx::MultiScaleDeformableAttention` node, for OpenVINO
with detrx's extension (onnxruntime cannot run that file). After exporting, the file is run in
onnxruntime on the export input (and, with --dynamic, on a second batch size and image size) and
the largest difference against eager PyTorch is printed; a file that fails to run or differs by
more than CHECK_TOLERANCE is an error (exit status 1).
"""
import argparse
import logging
import sys

import torch

from detrx.engine.checkpoint import build_model_from_checkpoint, load_checkpoint

DEFAULT_OPSET = 18
MIN_DYNAMIC_SIZE = 128  # the default export size with --dynamic is at least this
DEFAULT_IMAGE_SIZE = 512  # for a checkpoint that records no image size
CHECK_TOLERANCE = 1e-3  # max |onnxruntime - eager| of any output (boxes in pixels with --postprocess)


def load_detector(checkpoint_path):
    """-> (model in eval mode, postprocess, the checkpoint dict) from a detrx checkpoint;
    ValueError naming the file when it is not one or its weights do not fit its options."""
    checkpoint = load_checkpoint(checkpoint_path)
    try:
        model, postprocess, _ = build_model_from_checkpoint(checkpoint)
    except RuntimeError as error:
        raise ValueError(f"{checkpoint_path}: its weights do not fit the {checkpoint['model_options']['model']} "
                         f"its options describe ({error})") from error
    return model, postprocess, checkpoint


def trained_image_size(checkpoint):
    """The image side the model was evaluated at: the largest evaluation resize, else the run's
    synthetic --image-size, else DEFAULT_IMAGE_SIZE."""
    sizes = checkpoint["image"]["sizes"]
    if sizes:
        return max(sizes)
    return checkpoint.get("run", {}).get("image_size") or DEFAULT_IMAGE_SIZE


def main(argv=None):
    parser = argparse.ArgumentParser("detrx.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a detrx.train checkpoint.pth")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--dynamic", action="store_true", help="dynamic batch size, height and width")
    parser.add_argument("--postprocess", action="store_true", help="output scores, labels, boxes (xyxy pixels)")
    parser.add_argument("--height", type=int, default=None, help="export image height (default: the training --image-size; "
                        f"with --dynamic at least {MIN_DYNAMIC_SIZE})")
    parser.add_argument("--width", type=int, default=None, help="export image width (default: the height)")
    parser.add_argument("--batch-size", type=int, default=None, help="export batch size (default 1; 2 with --dynamic)")
    parser.add_argument("--trt-plugin", action="store_true", help="MSDA as TensorRT's plugin node "
                        "(trt::MultiscaleDeformableAttnPlugin_TRT); such a file runs only in TensorRT, so no check")
    parser.add_argument("--runtime-op", action="store_true", help="MSDA as one detrx::MultiScaleDeformableAttention "
                        "node (for OpenVINO with detrx's extension); onnxruntime cannot run such a file, so no check")
    parser.add_argument("--no-check", dest="check", action="store_false", help="skip the onnxruntime check")
    opts = parser.parse_args(argv)
    for name in ("height", "width", "batch_size"):
        if getattr(opts, name) is not None and getattr(opts, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(opts, name)}")
    if opts.trt_plugin and opts.runtime_op:
        parser.error("--trt-plugin and --runtime-op are two ways of writing MSDA: choose one")
    if opts.opset < DEFAULT_OPSET:
        parser.error(f"--opset must be >= {DEFAULT_OPSET} (the exporter's operator library), got {opts.opset}")
    try:
        model, postprocess, checkpoint = load_detector(opts.checkpoint)
    except (ValueError, OSError) as error:
        parser.error(str(error))

    import detrx.onnx
    from detrx.onnx.detector import ExportableDetector

    logging.getLogger("onnxscript").setLevel(logging.ERROR)  # constant folding's per-node notes

    module = ExportableDetector(model, postprocess if opts.postprocess else None).eval()
    # torch.export fixes any axis of size 1 in the example: with --dynamic, export at a size where
    # even the stride-64 level is 2 x 2, and with a batch of 2
    trained_size = trained_image_size(checkpoint)
    height = opts.height or (max(trained_size, MIN_DYNAMIC_SIZE) if opts.dynamic else trained_size)
    width = opts.width or height
    batch_size = opts.batch_size or (2 if opts.dynamic else 1)  # a size-1 axis would be fixed to 1
    images = torch.rand(batch_size, 3, height, width)
    dynamic = torch.export.Dim.DYNAMIC
    detrx.onnx.export(module, (images,), opts.out, trt_plugin=opts.trt_plugin, runtime_op=opts.runtime_op,
                      opset_version=opts.opset,
                      input_names=["images"], output_names=module.output_names, verbose=False,
                      dynamic_shapes=({0: dynamic, 2: dynamic, 3: dynamic},) if opts.dynamic else None)
    print(f"wrote {opts.out}: {checkpoint['model_options']['model']}, inputs images [{'B' if opts.dynamic else batch_size}, 3, "
          f"{'H' if opts.dynamic else height}, {'W' if opts.dynamic else width}], outputs {', '.join(module.output_names)}")
    if not opts.check:
        return
    if opts.trt_plugin or opts.runtime_op:
        node = "TensorRT's plugin node" if opts.trt_plugin else "detrx's MultiScaleDeformableAttention node"
        runtime = "TensorRT with that plugin" if opts.trt_plugin else \
            "OpenVINO with detrx's extension (core.add_extension(detrx.openvino.library_path()))"
        print(f"onnxruntime check skipped: onnxruntime cannot run {node}; run the file in {runtime}")
        return
    from detrx.onnx.verify import verify

    checks = [(images,)]
    if opts.dynamic:  # a second batch size and image size
        checks.append((torch.rand(batch_size + 1, 3, height + 32, width + 16),))
    try:
        results = verify(opts.out, module, checks, CHECK_TOLERANCE)
    except ValueError as error:
        sys.exit(f"detrx.export: the written file failed its check: {error}")
    for shapes, differences in results:
        print(f"onnxruntime vs eager on images {shapes[0]}: largest |difference| "
              + ", ".join(f"{name} {value:.2e}" for name, value in differences.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
