"""The training job's pieces between the options and the loop: its loaders (evaluation split over the
processes in order, training order from its own seeded generator), its log line, and restoring a
run from a checkpoint (optimizer, AMP scale, random states, the line that says what was resumed)."""
import argparse
import io
import os

import pytest
import torch
from torch import nn

from detrx import train
from detrx.engine.resume import rng_state


class Numbered(torch.utils.data.Dataset):
    """Item i: a 1x2x2 image filled with i, and a target naming i."""

    def __init__(self, size):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        return torch.full((3, 2, 2), float(index)), {"index": index}


def _indices(loader):
    return [[t["index"] for t in targets] for _, _, targets in loader]


def _loader_args(**overrides):
    return argparse.Namespace(**{"batch_size": 2, "num_workers": 0, "seed": 7, **overrides})


def test_say_reaches_a_pipe_at_once(monkeypatch):
    """Logs of a run are followed live (`| tee`): each line is flushed, not held in a buffer."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    piped = io.TextIOWrapper(io.BufferedWriter(io.FileIO(write_end, "w"), buffer_size=1 << 16))
    monkeypatch.setattr("sys.stdout", piped)
    train.say("epoch", 3)
    try:
        assert os.read(read_end, 100) == b"epoch 3\n"
    finally:
        piped.close()
        os.close(read_end)


def test_val_loader_covers_every_image_in_order():
    _, val_loader, generator = train.build_loaders(_loader_args(batch_size=2), None, Numbered(5))
    assert _indices(val_loader) == [[0, 1], [2, 3], [4]]
    assert generator is None


def test_each_process_evaluates_its_own_slice(monkeypatch):
    monkeypatch.setattr(train, "get_rank", lambda: 1)
    monkeypatch.setattr(train, "get_world_size", lambda: 3)
    _, val_loader, _ = train.build_loaders(_loader_args(batch_size=4), None, Numbered(8))
    assert _indices(val_loader) == [[1, 4, 7]]


def test_loaders_use_the_workers_asked_for():
    train_loader, val_loader, _ = train.build_loaders(_loader_args(num_workers=2), Numbered(4), Numbered(4))
    assert train_loader.num_workers == val_loader.num_workers == 2


@pytest.mark.parametrize("size, batch_sizes", [(15, [4, 4, 4]), (3, [3])])
def test_training_batches_are_full_unless_the_set_is_smaller_than_one(size, batch_sizes):
    loader, _, _ = train.build_loaders(_loader_args(batch_size=4), Numbered(size), Numbered(1))
    assert [len(batch) for batch in _indices(loader)] == batch_sizes


def test_training_order_comes_from_the_seed_and_the_returned_generator():
    train_set = Numbered(16)
    loader, _, generator = train.build_loaders(_loader_args(seed=7), train_set, Numbered(1))
    first = _indices(loader)
    torch.manual_seed(123)  # the global generator plays no part
    again, _, _ = train.build_loaders(_loader_args(seed=7), train_set, Numbered(1))
    assert _indices(again) == first
    assert sorted(sum(first, [])) == list(range(16)) and sum(first, []) != list(range(16))  # shuffled, all once
    other, _, _ = train.build_loaders(_loader_args(seed=8), train_set, Numbered(1))
    assert _indices(other) != first

    state = generator.get_state()  # the generator a checkpoint saves is the one that orders the next epoch
    next_epoch = _indices(loader)
    generator.set_state(state)
    assert _indices(loader) == next_epoch


class TwoPart(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(2, 2)
        self.head = nn.Linear(2, 1)


def _restore_args(**overrides):
    return argparse.Namespace(**{"lr": 2e-4, "lr_backbone": 1e-5, "lr_drop": 100, "weight_decay": 1e-4,
                                 "resume": "run/checkpoint.pth", **overrides})


def _checkpoint(optimizer, scheduler, scaler_state, rng_states):
    return {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler_state,
            "rng": rng_states, "epoch": 4, "step": 40}


def _fresh_optimizer(args):
    return train.build_optimizer(args, TwoPart())


def test_restore_reports_the_next_epoch_and_the_learning_rate(capsys):
    args = _restore_args()
    checkpoint = _checkpoint(*_fresh_optimizer(args), None, [rng_state()])
    optimizer, scheduler = _fresh_optimizer(args)
    assert train.restore_training(args, checkpoint, optimizer, scheduler, None, None) == (5, 40)
    assert capsys.readouterr().out.strip() == (
        "resuming run/checkpoint.pth after epoch 5 (step 40); learning rate now 2.00e-04")


def test_restore_names_the_honoured_changes(capsys):
    args = _restore_args(resume_changes={"lr": (1e-4, 2e-4)})
    checkpoint = _checkpoint(*_fresh_optimizer(args), None, [rng_state()])
    train.restore_training(args, checkpoint, *_fresh_optimizer(args), None, None)
    assert "; changed from the checkpoint and honoured: --lr 0.0001 -> 0.0002;" in capsys.readouterr().out


def test_restore_brings_back_the_sampler_order():
    args = _restore_args()
    generator = torch.Generator().manual_seed(1)
    checkpoint = _checkpoint(*_fresh_optimizer(args), None, [rng_state(generator)])
    expected = torch.randperm(10, generator=generator)
    later = torch.Generator().manual_seed(99)
    train.restore_training(args, checkpoint, *_fresh_optimizer(args), None, later)
    assert torch.equal(torch.randperm(10, generator=later), expected)


def test_random_states_of_another_world_size_are_not_applied_and_said(capsys):
    args = _restore_args()
    generator = torch.Generator().manual_seed(1)
    checkpoint = _checkpoint(*_fresh_optimizer(args), None, [rng_state(generator), rng_state(generator)])
    later = torch.Generator().manual_seed(99)
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(99))
    train.restore_training(args, checkpoint, *_fresh_optimizer(args), None, later)
    assert torch.equal(torch.randperm(10, generator=later), expected)
    assert "holds random states for 2 process(es), this run has 1" in capsys.readouterr().out


def test_restore_loads_the_amp_scale_when_both_sides_have_one():
    args = _restore_args()
    saved = torch.amp.GradScaler("cpu", init_scale=512.0)
    checkpoint = _checkpoint(*_fresh_optimizer(args), saved.state_dict(), [rng_state()])
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    train.restore_training(args, checkpoint, *_fresh_optimizer(args), scaler, None)
    assert scaler.get_scale() == 512.0

    train.restore_training(args, checkpoint, *_fresh_optimizer(args), None, None)  # AMP off now: scale unused
    checkpoint["scaler"] = None  # saved without AMP, resumed with it: the scaler starts fresh
    fresh = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    train.restore_training(args, checkpoint, *_fresh_optimizer(args), fresh, None)
    assert fresh.get_scale() == 2.0 ** 16


@pytest.fixture
def one_process_group():
    """A gloo process group of one: the code paths of a DDP run, in this process."""
    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def test_under_ddp_the_training_order_is_the_distributed_samplers_for_the_seed(one_process_group):
    loader, _, generator = train.build_loaders(_loader_args(seed=7, batch_size=4), Numbered(16), Numbered(1))
    assert generator is None  # the sampler's order is set by its seed and epoch, nothing to save
    expected = torch.randperm(16, generator=torch.Generator().manual_seed(7)).tolist()  # seed + epoch 0
    assert sum(_indices(loader), []) == expected
