"""Every command-line tool names itself in its messages, describes itself, and gives every option a
help sentence."""
import argparse
import importlib

import pytest

CLIS = ["detrx.train", "detrx.predict", "detrx.export", "detrx.data.check", "detrx.data.export_synthetic"]


class _ParserBuilt(Exception):
    """Raised in place of parsing, carrying the parser the tool built."""

    def __init__(self, parser):
        super().__init__(parser.prog)
        self.parser = parser


def _parser_of(module_name, monkeypatch):
    def stop(parser, *args, **kwargs):
        raise _ParserBuilt(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop)
    with pytest.raises(_ParserBuilt) as built:
        importlib.import_module(module_name).main([])
    return built.value.parser


@pytest.mark.parametrize("module_name", CLIS)
def test_every_option_is_described(module_name, monkeypatch):
    parser = _parser_of(module_name, monkeypatch)
    assert parser.prog == module_name  # "usage: detrx.predict ...", "detrx.predict: error: ..."
    assert parser.description and parser.description.strip()
    text = parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help.strip(), f"{action.option_strings} has no help"
        assert action.option_strings[-1] in text


@pytest.mark.parametrize("module_name", ["detrx.export", "detrx.data.check"])
def test_laid_out_description_keeps_its_lines(module_name, monkeypatch):
    """The tools whose description is laid out (a usage example on its own lines, a list of checks)
    show it in --help line by line, not refilled into paragraphs like the others' prose."""
    parser = _parser_of(module_name, monkeypatch)
    help_lines = parser.format_help().splitlines()
    for line in parser.description.strip().splitlines():
        assert line in help_lines, line
