"""The argparse value types: each bound exactly where its name says, NaN and non-numbers refused,
and argparse's usage error naming the type."""
import argparse

import pytest

from detrx.util.arg_types import (dropout_rate, non_negative_float, non_negative_int, non_negative_ints,
                                  positive_float, positive_int, positive_ints, probability)


@pytest.mark.parametrize("parse, accepted, refused", [
    (positive_int, ["1", "7"], ["0", "-3", "1.5", "one"]),
    (non_negative_int, ["0", "12"], ["-1", "2.0"]),
    (positive_float, ["1e-9", "2.5", "inf"], ["0", "-0.1", "nan", "x"]),
    (non_negative_float, ["0", "3.25"], ["-1e-9", "inf", "nan"]),
    (probability, ["0", "0.5", "1"], ["-0.01", "1.01", "nan"]),
    (dropout_rate, ["0", "0.99"], ["1", "-0.5", "nan"]),
])
def test_bounds(parse, accepted, refused):
    for text in accepted:
        assert parse(text) == float(text)
        assert type(parse(text)) is (int if parse in (positive_int, non_negative_int) else float)
    for text in refused:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


@pytest.mark.parametrize("parse, text, message", [
    (positive_int, "0", r"must be an integer >= 1, got 0"),
    (positive_int, "1.5", r"expected an integer, got '1.5'"),
    (non_negative_int, "-1", r"must be an integer >= 0, got -1"),
    (positive_float, "0", r"must be a number > 0, got 0"),
    (non_negative_float, "inf", r"must be a finite number >= 0, got inf"),
    (probability, "x", r"expected a number, got 'x'"),
    (probability, "2", r"must be a number in \[0, 1\], got 2"),
    (dropout_rate, "1", r"must be a number in \[0, 1\), got 1"),
])
def test_messages_say_what_was_expected_and_what_came(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse(text)


def test_int_lists():
    assert positive_ints("8,16,32") == [8, 16, 32]
    assert non_negative_ints("0,2") == [0, 2]
    assert non_negative_ints(" ") == []
    for parse, text in ((positive_ints, "8,0"), (positive_ints, ""), (non_negative_ints, "1,-1"), (positive_ints, "a,2")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)
    with pytest.raises(argparse.ArgumentTypeError, match="integers >= 1, got 4,0"):
        positive_ints("4,0")


def test_argparse_names_the_type_in_its_usage_error(capsys):
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=positive_int)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--epochs", "0"])
    assert exit_info.value.code == 2
    assert "--epochs: must be an integer >= 1, got 0" in capsys.readouterr().err
    parser.add_argument("--lr", type=positive_float)
    with pytest.raises(SystemExit):
        parser.parse_args(["--lr", "fast"])
    assert "--lr: expected a number, got 'fast'" in capsys.readouterr().err
