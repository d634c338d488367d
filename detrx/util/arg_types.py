"""argparse value types that reject bad numbers at parse time (usage error, exit code 2).

Each is a plain function of the option's text; a NaN fails every range check (comparisons with NaN
are false), so it is refused like any number out of range.
"""
import argparse
import math


def _number(kind, text):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")


def _in_range(kind, text, in_range, what):
    """kind(text), refused unless in_range(value)."""
    value = _number(kind, text)
    if not in_range(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def positive_int(text):
    return _in_range(int, text, lambda v: v >= 1, "an integer >= 1")


def non_negative_int(text):
    return _in_range(int, text, lambda v: v >= 0, "an integer >= 0")


def positive_float(text):
    return _in_range(float, text, lambda v: v > 0, "a number > 0")


def non_negative_float(text):
    return _in_range(float, text, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def probability(text):
    return _in_range(float, text, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def dropout_rate(text):
    return _in_range(float, text, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _int_list(text, low):
    """Comma-separated integers, each >= low ('' is the empty list when low is 0)."""
    if low == 0 and text.strip() == "":
        return []
    values = [_number(int, part) for part in text.split(",")]
    if any(v < low for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated integers >= {low}, got {text}")
    return values


def positive_ints(text):
    """'8,16,32' -> [8, 16, 32]."""
    return _int_list(text, 1)


def non_negative_ints(text):
    """'0,2' -> [0, 2]; '' -> []."""
    return _int_list(text, 0)
