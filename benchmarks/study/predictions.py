"""Every validation image's per-query predictions, recorded after each epoch of a study run, so that
query specialisation and error types can be measured afterwards without retraining.

A run's record (`<run dir>/predictions.npz`):
    epochs      int    [E]           0-based epoch of each record
    scores      float  [E, V, Q]     each query's best object-class probability (softmax without
                                     "no object" for ce models, sigmoid for focal ones)
    labels      int    [E, V, Q]     that class
    boxes       float  [E, V, Q, 4]  normalised (cx, cy, w, h)
    gt_boxes    float  [V, G, 4]     normalised (cx, cy, w, h), zero-padded to G
    gt_labels   int    [V, G]        -1 at padding
"""
import argparse
import json
import os

import numpy as np
import torch

from detrx.data import build_dataset, collate_fn

BATCH = 50  # val images per forward


class PredictionRecorder:
    """Collects query_predictions(model) for each epoch over the whole val split of `args`."""

    def __init__(self, args):
        self.loss = args.loss
        dataset = build_dataset("val", args)
        self.batches = [collate_fn([dataset[i] for i in range(start, min(start + BATCH, len(dataset)))])
                        for start in range(0, len(dataset), BATCH)]
        targets = [t for _, _, batch_targets in self.batches for t in batch_targets]
        most = max(1, max(len(t["labels"]) for t in targets))
        self.gt_boxes = np.zeros((len(targets), most, 4), np.float32)
        self.gt_labels = np.full((len(targets), most), -1, np.int64)
        for i, target in enumerate(targets):
            n = len(target["labels"])
            self.gt_boxes[i, :n] = target["boxes"].numpy()
            self.gt_labels[i, :n] = target["labels"].numpy()
        self.epochs, self.scores, self.labels, self.boxes = [], [], [], []

    @torch.no_grad()
    def __call__(self, epoch, model):
        model.eval()
        scores, labels, boxes = [], [], []
        for images, mask, _ in self.batches:
            outputs = model(images, mask)
            logits = outputs["pred_logits"].float()  # [B, Q, K]
            probs = logits.softmax(-1)[..., :-1] if self.loss == "ce" else logits.sigmoid()
            best, label = probs.max(-1)  # [B, Q]
            scores.append(best)
            labels.append(label)
            boxes.append(outputs["pred_boxes"].float())  # [B, Q, 4]
        self.epochs.append(epoch)
        self.scores.append(torch.cat(scores).numpy())
        self.labels.append(torch.cat(labels).numpy().astype(np.int8))
        self.boxes.append(torch.cat(boxes).numpy())

    def save(self, path):
        np.savez_compressed(path, epochs=np.asarray(self.epochs), scores=np.stack(self.scores),
                            labels=np.stack(self.labels), boxes=np.stack(self.boxes),
                            gt_boxes=self.gt_boxes, gt_labels=self.gt_labels)


DEFAULT_RUNS = "/tmp/detrx_convergence/convergence_detr_contrastive_deformable_cross/runs"
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def study_parser(description, default_variants):
    """The options of every analysis of a study's runs: --runs, --variants, --seeds, --out."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="the runs folder of a study (run.py --work-dir/<name>/runs)")
    parser.add_argument("--variants", default=default_variants, help="comma list of the study's variants")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", default=RESULTS, help="folder of the JSON, tables and figures")
    return parser


def parse_study_args(parser, argv=None):
    """Parses study_parser's options: variants and seeds as lists, the output folder created, and
    matplotlib set to write files only."""
    import matplotlib

    matplotlib.use("Agg")
    opts = parser.parse_args(argv)
    opts.variants, opts.seeds = opts.variants.split(","), [int(s) for s in opts.seeds.split(",")]
    os.makedirs(opts.out, exist_ok=True)
    return opts


def save_figure(fig, path):
    """Lays out, writes (PNG) and closes a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_run(runs_dir, variant, seed):
    """(the run's JSON record from convergence.py, its predictions record as a dict of arrays)."""
    path = os.path.join(runs_dir, f"{variant}_seed{seed}")
    if not os.path.isfile(path + ".json"):
        raise FileNotFoundError(f"no run {variant} seed {seed} in {runs_dir} (run benchmarks/study/run.py first)")
    with open(path + ".json") as f:
        summary = json.load(f)
    with np.load(os.path.join(path, "predictions.npz")) as record:
        return summary, {key: record[key] for key in record.files}
