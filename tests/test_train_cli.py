"""The training CLI's usage errors: every bad option is a one-line message and exit code 2, before
any data or model is built; --help shows the defaults."""
import pytest
import torch

from detrx import train
from detrx.engine.config import get_args_parser, parse_args

from _models_config import TINY

BAD_OPTIONS = [
    (["--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got 0"),
    (["--num-queries", "0"], "argument --num-queries: must be an integer >= 1, got 0"),
    (["--epochs", "-2"], "argument --epochs: must be an integer >= 1, got -2"),
    (["--eval-every", "0"], "argument --eval-every: must be an integer >= 1, got 0"),
    (["--lr=-1e-3"], "argument --lr: must be a number > 0, got -1e-3"),
    (["--lr", "nan"], "argument --lr: must be a number > 0, got nan"),
    (["--lr-backbone=-1"], "argument --lr-backbone: must be a finite number >= 0, got -1"),
    (["--weight-decay", "x"], "argument --weight-decay: expected a number, got 'x'"),
    (["--dropout", "1"], "argument --dropout: must be a number in [0, 1), got 1"),
    (["--label-noise-ratio", "1.5"], "argument --label-noise-ratio: must be a number in [0, 1], got 1.5"),
    (["--backbone-widths", "8,0,32,32"], "argument --backbone-widths: must be comma-separated integers >= 1"),
    (["--lr-drop", "0"], "argument --lr-drop: must be an integer >= 1, got 0"),
    (["--d-model", "30", "--nheads", "4"], "--d-model (30) must be divisible by --nheads (4)"),
    (["--min-objects", "5", "--max-objects", "2"], "--min-objects (5) must be <= --max-objects (2)"),
    (["--num-classes", "9"], "--num-classes must be in [1, 5] for the synthetic set, got 9"),
    (["--object-min-size", "40"], "need 2 <= --object-min-size <= --object-max-size <= --image-size"),
    (["--model", "detr", "--two-stage"], "--two-stage applies to the deformable models only"),
    (["--eval"], "--eval needs a checkpoint (--resume PATH), or --allow-random"),
    (["--resume", "nope.pth"], "--resume 'nope.pth' is not a file"),
    (["--device", "cpu", "--amp"], "--amp needs a CUDA device"),
    (["--device", "tpu7"], "--device must be like 'cpu', 'cuda' or 'cuda:1', got 'tpu7'"),
    (["--dataset", "coco"], "--dataset coco needs --train-images and --train-ann"),
    (["--dataset", "coco", "--train-images", "nowhere", "--train-ann", "a.json", "--val-images", "v", "--val-ann", "v.json"],
     "--train-images 'nowhere' is not a folder"),
]


def _usage_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv)
    err = capsys.readouterr().err
    return exit_info.value.code, err.strip().splitlines()[-1]


@pytest.mark.parametrize("options, message", BAD_OPTIONS, ids=[" ".join(o) for o, _ in BAD_OPTIONS])
def test_bad_option_is_a_usage_error(capsys, monkeypatch, tmp_path, options, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train, "build_datasets", lambda *a, **k: pytest.fail("data were built"))
    code, last_line = _usage_error(capsys, [*TINY, "--output-dir", str(tmp_path / "run"), *options])
    assert code == 2
    assert last_line.startswith("detrx.train: error: ") and message in last_line


def test_cuda_without_a_gpu_is_one_line(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, last_line = _usage_error(capsys, [*TINY, "--device", "cuda", "--output-dir", str(tmp_path)])
    assert code == 2 and last_line == ("detrx.train: error: --device cuda: no CUDA device is available "
                                       "(torch.cuda.is_available() is False)")


def test_output_dir_that_is_a_file(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, last_line = _usage_error(capsys, [*TINY, "--output-dir", str(blocker)])
    assert code == 2 and f"--output-dir {str(blocker)!r} exists and is not a folder" in last_line
    code, last_line = _usage_error(capsys, [*TINY, "--output-dir", str(blocker / "run")])
    assert code == 2 and "cannot be created" in last_line


def test_resume_of_a_file_that_is_not_a_checkpoint(capsys, tmp_path):
    fake = tmp_path / "fake.pth"
    fake.write_bytes(b"\0" * 100)
    code, last_line = _usage_error(capsys, ["--resume", str(fake)])
    assert code == 2 and f"checkpoint {str(fake)!r} could not be read" in last_line


def test_help_shows_defaults_and_the_models(capsys):
    with pytest.raises(SystemExit) as exit_info:
        get_args_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "AdamW learning rate (default: 0.0001)" in text
    assert "images per step (per process) (default: 8)" in text
    assert "DN-DETR: DETR plus denoising queries" in text  # from the model registry
    for renamed in ("--object-min-size", "--object-max-size", "--image-max-size"):
        assert renamed in text
    for old in ("--min-size ", "--max-size-objects", "--max-size "):
        assert old not in text


def test_class_count_is_not_a_side_effect_of_building_data(tmp_path):
    args = parse_args([*TINY, "--num-classes", "4", "--output-dir", str(tmp_path)])
    before = dict(vars(args))
    from detrx.data import build_datasets
    datasets = build_datasets(args)
    assert vars(args) == before and len(datasets.classes) == 4
