"""One training epoch and one evaluation pass."""
import math

import torch
from tqdm import tqdm

from detrx.engine.coco_eval import coco_evaluate_with_table
from detrx.engine.dist import all_gather_list, is_main_process, reduce_mean
from detrx.util.box_ops import box_xyxy_to_xywh

LOGGED_LOSSES = ("loss_ce", "loss_bbox", "loss_giou", "loss_ce_dn", "loss_bbox_dn", "loss_giou_dn")


def to_device(images, mask, targets, device):
    targets = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in t.items()} for t in targets]
    return images.to(device, non_blocking=True), mask.to(device, non_blocking=True), targets


def step_record(criterion, losses, total):
    """Python floats for the log: total, the final layer's losses, and "matched_total" (the weighted
    Hungarian terms of all layers, DN excluded: the quantity DETR and DN-DETR share)."""
    record = {"loss": total.item()}
    record.update({k: losses[k].item() for k in LOGGED_LOSSES if k in losses})
    record["matched_total"] = sum(v.item() * criterion.weight_dict[k] for k, v in losses.items()
                                  if "_dn" not in k and k in criterion.weight_dict)
    return record


def train_one_epoch(model, criterion, loader, optimizer, device, epoch, step=0, scaler=None,
                    max_norm=0.1, max_steps=None, log=None, progress=True):
    """Trains for one pass over `loader` (or max_steps batches); calls log(record) per step with the
    process-averaged losses. Returns the global step after the epoch."""
    model.train()
    criterion.train()
    total_steps = len(loader) if max_steps is None else min(max_steps, len(loader))
    bar = tqdm(total=total_steps, desc=f"epoch {epoch}", disable=not (progress and is_main_process()), leave=False)
    for i, batch in enumerate(loader):
        if i >= total_steps:
            break
        images, mask, targets = to_device(*batch, device)
        with torch.autocast("cuda", enabled=scaler is not None):
            outputs = model(images, mask, targets)
            losses = criterion(outputs, targets)
            total = criterion.total(losses)
        if not math.isfinite(total.item()):
            raise FloatingPointError(f"loss is {total.item()} at step {step}: {({k: v.item() for k, v in losses.items()})}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.unscale_(optimizer)
        else:
            total.backward()
        if max_norm and max_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        record = reduce_mean(step_record(criterion, losses, total))
        record.update(step=step, epoch=epoch, lr=optimizer.param_groups[0]["lr"])
        if log is not None:
            log(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        bar.update()
        step += 1
    bar.close()
    return step


def to_coco_detections(detections, targets, label_to_category_id):
    """PostProcess output + targets -> COCO result entries (xywh boxes, dataset category ids)."""
    results = []
    for det, target in zip(detections, targets):
        boxes = box_xyxy_to_xywh(det["boxes"]).tolist()
        for box, score, label in zip(boxes, det["scores"].tolist(), det["labels"].tolist()):
            results.append({"image_id": target["image_id"], "category_id": label_to_category_id[label],
                            "bbox": box, "score": score})
    return results


@torch.no_grad()
def evaluate(model, postprocess, loader, device, coco_gt, label_to_category_id, on_outputs=None, with_table=False):
    """COCO mAP of `model` on `loader` (all processes' detections gathered). on_outputs(outputs,
    targets) is called per batch (e.g. to collect query statistics). Returns the stats dict, or
    (stats, pycocotools' summary table) with_table."""
    model.eval()
    results = []
    for batch in loader:
        images, mask, targets = to_device(*batch, device)
        outputs = model(images, mask)
        if on_outputs is not None:
            on_outputs(outputs, targets)
        sizes = torch.stack([t["orig_size"] for t in targets])
        results += to_coco_detections(postprocess(outputs, sizes), targets, label_to_category_id)
    stats, table = coco_evaluate_with_table(coco_gt, all_gather_list(results))
    return (stats, table) if with_table else stats
