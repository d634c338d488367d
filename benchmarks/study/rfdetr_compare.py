"""RF-DETR side by side with detrx's DETR and DN-DETR on the synthetic validation images.

    python benchmarks/study/rfdetr_compare.py --rfdetr-checkpoint rf-detr-nano.pth \\
        --detr-checkpoint runs/detr/checkpoint.pth --dn-detr-checkpoint runs/dn_detr/checkpoint.pth
    python benchmarks/study/rfdetr_compare.py --allow-random          # random weights where a checkpoint is missing
    python benchmarks/study/rfdetr_compare.py --step-time             # training-step times: RF-DETR vs the study's DETR

Every model sees the same synthetic validation images (the convergence study's set unless the
synthetic options say otherwise). RF-DETR gets them resized to its input side (nano: 384) and its
boxes are mapped back to the original pixels. Each model gets COCO box metrics computed
class-agnostically (every class one "object": localisation only, so a COCO-pretrained RF-DETR,
whose classes are not the shapes, can be compared) and class-aware when its class names are the
synthetic set's. Eval latency: median over the images of one image per call (preprocessing, model
and postprocessing), --threads threads. Writes --out.json, --out.md and --out.png (a few images,
one column per model after the ground truth). Without a checkpoint a model is refused unless
--allow-random; its rows and picture column then say "random weights".
"""
import argparse
import copy
import os
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

STUDY = os.path.dirname(os.path.abspath(__file__))
for folder in (os.path.dirname(STUDY), os.path.dirname(os.path.dirname(STUDY))):  # benchmarks/, and detrx itself
    if folder not in sys.path:
        sys.path.insert(0, folder)
from common import describe_machine, write_json  # noqa: E402
from study.config import STUDY_CONFIG, VARIANTS  # noqa: E402
from study.rfdetr_detectors import (RFDETR_VARIANTS, detrx_detector, quiet_rfdetr, rfdetr_detector,  # noqa: E402
                              rfdetr_resolution_step)
from study.rfdetr_step_time import step_time  # noqa: E402

from detrx.data import build_synthetic  # noqa: E402
from detrx.data.synthetic import add_synthetic_arguments  # noqa: E402
from detrx.engine.coco_eval import STAT_NAMES, coco_evaluate, coco_gt_from_dict  # noqa: E402
from detrx.engine.draw import render_detections  # noqa: E402
from detrx.util.arg_types import non_negative_int, positive_int, probability  # noqa: E402
from detrx.util.box_ops import box_xyxy_to_xywh  # noqa: E402

DEFAULT_OUT = os.path.join(STUDY, "results", "rfdetr_compare")
TITLE_HEIGHT, HEADER_HEIGHT = 16, 28  # picture bands above the images, pixels
AGNOSTIC_CATEGORY = {"id": 1, "name": "object"}


def study_synthetic_defaults():
    """The convergence study's synthetic-set options (study.config.STUDY_CONFIG) as {dest: value}."""
    parser = argparse.ArgumentParser(add_help=False)
    add_synthetic_arguments(parser)
    return vars(parser.parse_known_args(STUDY_CONFIG)[0])


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rfdetr-checkpoint", default=None, help="a local RF-DETR checkpoint (.pth) of --rfdetr-model")
    p.add_argument("--rfdetr-model", default="nano", choices=RFDETR_VARIANTS, help="RF-DETR variant")
    p.add_argument("--rfdetr-resolution", type=positive_int, default=None,
                   help="RF-DETR's input side (default: the variant's; nano 384)")
    p.add_argument("--detr-checkpoint", default=None, help="a DETR checkpoint written by `python -m detrx.train`")
    p.add_argument("--dn-detr-checkpoint", default=None, help="a DN-DETR checkpoint written by `python -m detrx.train`")
    p.add_argument("--allow-random", action="store_true",
                   help="build a model whose checkpoint is not given with random weights (labelled so everywhere)")
    data = p.add_argument_group("synthetic set (default: the convergence study's)")
    add_synthetic_arguments(data)
    p.set_defaults(**study_synthetic_defaults())
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads")
    p.add_argument("--draw-images", type=non_negative_int, default=4, help="validation images in the picture")
    p.add_argument("--score-threshold", type=probability, default=0.5, help="draw detections scoring at least this")
    p.add_argument("--scale", type=positive_int, default=3, help="upscaling of the drawn images")
    p.add_argument("--out", default=DEFAULT_OUT, help="output path without extension (.json, .md, .png)")
    p.add_argument("--step-time", action="store_true",
                   help="only time training steps (RF-DETR and the study's DETR, random weights) -> --out_step_time.*")
    p.add_argument("--steps", type=positive_int, default=5, help="--step-time: timed steps per case after a warm-up")
    return p


def parse_args(argv=None):
    parser = get_parser()
    opts = parser.parse_args(argv)
    try:
        with quiet_rfdetr():  # importing rfdetr warns about torch.jit.script
            import rfdetr.models.lwdetr  # noqa: F401
    except ImportError:
        parser.error("the comparison needs the rfdetr package: pip install 'detrx[rfdetr]'")
    try:
        build_synthetic("val", opts)
    except ValueError as failure:
        parser.error(f"the synthetic set's options: {failure}")
    if opts.draw_images > opts.num_val:
        parser.error(f"--draw-images ({opts.draw_images}) must be <= --num-val ({opts.num_val})")
    step = rfdetr_resolution_step(opts.rfdetr_model)
    if opts.rfdetr_resolution is not None and opts.rfdetr_resolution % step:
        parser.error(f"--rfdetr-resolution must be a multiple of {step} for RF-DETR {opts.rfdetr_model} "
                     f"(patch size x windows), got {opts.rfdetr_resolution}")
    if opts.step_time:
        return opts
    missing = [flag for flag, path in (("--rfdetr-checkpoint", opts.rfdetr_checkpoint),
                                       ("--detr-checkpoint", opts.detr_checkpoint),
                                       ("--dn-detr-checkpoint", opts.dn_detr_checkpoint)) if not path]
    if missing and not opts.allow_random:
        parser.error(f"no {', '.join(missing)} given: pass the checkpoint(s), or --allow-random to compare random "
                     "weights (RF-DETR's pretrained weights cannot be downloaded by this script)")
    return opts


def build_detectors(opts, error):
    """[DETR, DN-DETR, RF-DETR] Detectors; error(message) for a checkpoint that cannot be used."""
    names = build_synthetic("val", opts).class_names
    detectors = []
    for variant, flag, path in (("detr", "--detr-checkpoint", opts.detr_checkpoint),
                                ("dn_detr", "--dn-detr-checkpoint", opts.dn_detr_checkpoint)):
        try:
            detectors.append(detrx_detector(variant, path, [*STUDY_CONFIG, *VARIANTS[variant]], len(names), opts.image_size))
        except ValueError as failure:
            error(f"{flag}: {failure}")
    try:
        detectors.append(rfdetr_detector(opts.rfdetr_model, opts.rfdetr_resolution, opts.rfdetr_checkpoint, names))
    except ValueError as failure:
        error(f"--rfdetr-checkpoint: {failure}")
    return detectors


def run_detector(detector, images):
    """Detections of every image and the per-image latencies (s), after one warm-up call."""
    detector.predict(images[0])
    detections, seconds = [], []
    for image in images:
        start = time.perf_counter()
        detections.append(detector.predict(image))
        seconds.append(time.perf_counter() - start)
    return detections, seconds


def coco_results(detections, label_to_category):
    """Per-image detections -> COCO result entries; labels missing from label_to_category are dropped."""
    results = []
    for image_id, found in enumerate(detections):
        boxes = box_xyxy_to_xywh(found["boxes"]).tolist()
        for box, score, label in zip(boxes, found["scores"].tolist(), found["labels"].tolist()):
            if label in label_to_category:
                results.append({"image_id": image_id, "category_id": label_to_category[label], "bbox": box,
                                "score": score})
    return results


def class_agnostic(coco_dict):
    """The ground truth with every category made one "object" category."""
    agnostic = copy.deepcopy(coco_dict)
    for annotation in agnostic["annotations"]:
        annotation["category_id"] = AGNOSTIC_CATEGORY["id"]
    agnostic["categories"] = [dict(AGNOSTIC_CATEGORY)]
    return agnostic


def is_class_aware(detector, data_names):
    """True when the model's class names are exactly the synthetic set's."""
    return set(name for name in detector.label_names if name) == set(data_names)


def metrics(detector, detections, coco_dict):
    """{"class_aware": stats or None, "agnostic": stats} (pycocotools: AP, AP50, AP75, APs, APm, APl)."""
    agnostic_gt = coco_gt_from_dict(class_agnostic(coco_dict))
    every_label = {label for found in detections for label in found["labels"].tolist()}
    agnostic = coco_evaluate(agnostic_gt, coco_results(detections, dict.fromkeys(every_label, 1)))
    data_names = [category["name"] for category in coco_dict["categories"]]
    if not is_class_aware(detector, data_names):
        return {"class_aware": None, "agnostic": agnostic}
    by_name = {category["name"]: category["id"] for category in coco_dict["categories"]}
    label_to_category = {label: by_name[name] for label, name in enumerate(detector.label_names) if name in by_name}
    return {"class_aware": coco_evaluate(coco_gt_from_dict(coco_dict), coco_results(detections, label_to_category)),
            "agnostic": agnostic}


def column_title(detector):
    return [detector.name, detector.weights if detector.random else f"{detector.weights} ({detector.input_size})"]


def side_by_side(dataset, detectors, detections, count, score_threshold, scale):
    """A PIL image: one row per validation image (the first `count`), the ground truth then one
    column per model; a title band names the models with random weights."""
    side = dataset.image_size * scale
    columns = 1 + len(detectors)
    picture = Image.new("RGB", (columns * side, TITLE_HEIGHT + HEADER_HEIGHT + count * side), "white")
    pen = ImageDraw.Draw(picture)
    random = [d.name for d in detectors if d.random]
    title = f"synthetic val images 0-{count - 1}, detections scoring >= {score_threshold}"
    pen.text((4, 2), title + (f"; random weights: {', '.join(random)}" if random else ""), fill="black")
    headers = [["ground truth", ""]] + [column_title(d) for d in detectors]
    for column, lines in enumerate(headers):
        for line_index, line in enumerate(lines):
            pen.text((column * side + 4, TITLE_HEIGHT + 2 + 12 * line_index), line, fill="black")
    for row in range(count):
        image, boxes, labels = dataset.render(row)
        truth = {"boxes": boxes, "scores": torch.ones(len(labels)), "labels": labels}
        cells = [render_detections(image, truth, dataset.class_names, 0.0, scale)]
        cells += [render_detections(image, found[row], d.label_names, score_threshold, scale)
                  for d, found in zip(detectors, detections)]
        for column, cell in enumerate(cells):
            picture.paste(cell, (column * side, TITLE_HEIGHT + HEADER_HEIGHT + row * side))
    for column in range(1, columns):  # white rules between the columns
        pen.line([(column * side, TITLE_HEIGHT), (column * side, picture.height)], fill="white", width=2)
    return picture


def markdown_table(report):
    """The comparison as a markdown table (metrics of the class-aware and the agnostic evaluation)."""
    lines = ["| model | weights | input | parameters | AP | AP50 | AP75 | agnostic AP | agnostic AP50 | "
             "agnostic AP75 | eval latency ms (median) |", "|" + "---|" * 11]
    for row in report["models"]:
        aware, agnostic = row["metrics"]["class_aware"], row["metrics"]["agnostic"]
        aware_cells = [f"{aware[k]:.3f}" for k in ("AP", "AP50", "AP75")] if aware else ["-", "-", "-"]
        lines.append(f"| {row['name']} | {row['weights']} | {row['input_size']} | {row['parameters'] / 1e6:.2f} M | "
                     + " | ".join(aware_cells) + " | "
                     + " | ".join(f"{agnostic[k]:.3f}" for k in ("AP", "AP50", "AP75"))
                     + f" | {1e3 * row['latency_median_s']:.1f} |")
    data = report["data"]
    lines += ["", f"{data['num_val']} synthetic val images {data['image_size']}x{data['image_size']} "
              f"({data['num_classes']} classes, data seed {data['data_seed']}); {report['threads']} thread(s) on "
              f"{report['machine']['cpu_model']}. AP/AP50/AP75: class-aware, '-' where the model's classes are not "
              "the synthetic set's; agnostic: every class one 'object' (localisation only). Latency: one image per "
              "call, preprocessing, model and postprocessing, median over the images."]
    if any(row["weights"] == "random weights" for row in report["models"]):
        lines.append("Rows with random weights measure the pipeline, not the model: their metrics are near 0.")
    return "\n".join(lines) + "\n"


def compare(opts, error):
    torch.set_num_threads(opts.threads)
    dataset = build_synthetic("val", opts)
    coco_dict = dataset.coco_dict()
    images = [dataset.render(index)[0] for index in range(len(dataset))]
    detectors = build_detectors(opts, error)
    machine = describe_machine("cpu")
    rows, all_detections = [], []
    for detector in detectors:
        detections, seconds = run_detector(detector, images)
        all_detections.append(detections)
        rows.append({"name": detector.name, "weights": detector.weights, "input_size": detector.input_size,
                     "parameters": detector.parameters,
                     "class_aware": is_class_aware(detector, dataset.class_names),
                     "metrics": metrics(detector, detections, coco_dict),
                     "latency_median_s": statistics.median(seconds),
                     "latency_iqr_s": float(np.subtract(*np.percentile(seconds, [75, 25]))),
                     "latency_s": seconds})
        print(f"{detector.name} ({detector.weights}): agnostic AP {rows[-1]['metrics']['agnostic']['AP']:.3f}, "
              f"{1e3 * rows[-1]['latency_median_s']:.1f} ms per image", flush=True)
    report = {"machine": machine, "threads": opts.threads, "metric_names": list(STAT_NAMES),
              "data": {key: getattr(opts, key) for key in study_synthetic_defaults()}, "models": rows}
    os.makedirs(os.path.dirname(os.path.abspath(opts.out)), exist_ok=True)
    write_json(opts.out + ".json", report)
    table = markdown_table(report)
    with open(opts.out + ".md", "w") as f:
        f.write(table)
    if opts.draw_images:
        side_by_side(dataset, detectors, all_detections, opts.draw_images, opts.score_threshold,
                     opts.scale).save(opts.out + ".png")
    print(table)
    return report


def main(argv=None):
    parser = get_parser()
    opts = parse_args(argv)
    if opts.step_time:
        return step_time(opts)
    return compare(opts, parser.error)


if __name__ == "__main__":
    main()
