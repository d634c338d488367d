"""Draws detections (boxes, class names, scores) on an image: as a PIL image, or saved as PNG."""
from PIL import Image, ImageDraw

PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230))


def render_detections(image, detections, class_names, score_threshold=0.5, scale=1):
    """image uint8 array [H, W, 3]; detections {"boxes" [D, 4] xyxy pixels, "scores", "labels"} ->
    an RGB PIL image upscaled by `scale` (so small images stay readable) with the boxes above
    score_threshold drawn. A label outside class_names is drawn as its number."""
    if score_threshold < 0 or score_threshold > 1:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    canvas = Image.fromarray(image).convert("RGB")
    canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)
    pen = ImageDraw.Draw(canvas)
    for box, score, label in zip(detections["boxes"].tolist(), detections["scores"].tolist(),
                                 detections["labels"].tolist()):
        if score < score_threshold:
            continue
        colour = PALETTE[label % len(PALETTE)]
        x0, y0, x1, y1 = (v * scale for v in box)
        pen.rectangle([x0, y0, x1, y1], outline=colour, width=2)
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        pen.text((x0 + 2, max(y0 - 11, 0)), f"{name} {score:.2f}", fill=colour)
    return canvas


def draw_detections(image, detections, class_names, path, score_threshold=0.5, scale=1):
    """render_detections, written to `path` as PNG; returns the path."""
    render_detections(image, detections, class_names, score_threshold, scale).save(path)
    return path
