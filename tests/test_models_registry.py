"""The model registry is the one list of models: the CLI, build_model and the docs follow it."""
import os
import re

import pytest

from detrx.engine.config import get_args_parser
from detrx.models import MODELS, build_model
from detrx.models.registry import model_spec

from _models_config import tiny_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cli_choices_are_the_registry():
    [action] = [a for a in get_args_parser()._actions if a.dest == "model"]
    assert list(action.choices) == list(MODELS)


def test_docs_table_lists_the_registry():
    with open(os.path.join(ROOT, "docs", "training.md")) as f:
        rows = re.findall(r"^\| `(\w+)` \| (\w+) \| (yes|no) \| (.+) \|$", f.read(), flags=re.M)
    assert rows == [(name, spec.family.name, "yes" if spec.denoising else "no", spec.description)
                    for name, spec in MODELS.items()]


@pytest.mark.parametrize("name", list(MODELS))
def test_build_model_builds_each_registered_model_with_the_given_class_count(name):
    model, criterion, _ = build_model(tiny_args(name), num_classes=7)
    assert type(model).__name__.lower().replace("_", "") == name.replace("_", "")
    assert criterion.num_classes == 7 and model.num_classes == 7


def test_unknown_model_and_bad_class_count():
    with pytest.raises(ValueError, match="model must be one of .*'detr'"):
        model_spec("yolo")
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        build_model(tiny_args("detr"), num_classes=0)
