"""argparse value types that reject bad numbers at parse time (usage error, exit code 2)."""
import argparse


def _number(kind, text):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")


def _bounded(kind, low=None, high=None, low_open=False, high_open=False, what=""):
    """A type function: kind(text) checked against [low, high] (or open ends)."""
    def parse(text):
        value = _number(kind, text)
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if value != value or too_low or too_high:  # value != value: NaN
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value
    return parse


positive_int = _bounded(int, low=1, what="an integer >= 1")
non_negative_int = _bounded(int, low=0, what="an integer >= 0")
positive_float = _bounded(float, low=0, low_open=True, what="a number > 0")
non_negative_float = _bounded(float, low=0, high=float("inf"), high_open=True, what="a finite number >= 0")
probability = _bounded(float, low=0, high=1, what="a number in [0, 1]")
dropout_rate = _bounded(float, low=0, high=1, high_open=True, what="a number in [0, 1)")


def _int_list(low):
    """A type function: comma-separated integers, each >= low ('' is the empty list when low is 0)."""
    def parse(text):
        if low == 0 and text.strip() == "":
            return []
        values = [_number(int, part) for part in text.split(",")]
        if any(v < low for v in values):
            raise argparse.ArgumentTypeError(f"must be comma-separated integers >= {low}, got {text}")
        return values
    return parse


positive_ints = _int_list(1)  # '8,16,32' -> [8, 16, 32]
non_negative_ints = _int_list(0)  # '0,2' -> [0, 2]; '' -> []
