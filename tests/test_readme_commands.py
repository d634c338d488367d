"""Every command the README shows still runs as written: the README's fenced bash blocks are split
into commands, each program is started with --help, and every option the README gives it must be
one that its help lists; a path into the repository that a command names must exist. So a renamed
option or a moved script fails here instead of for a reader.

Two kinds of command are recognised and not run, each reported as skipped with its reason:
- `pip install ...`: it changes the environment; CI (.ci/run) runs the README's install command.
- `pytest` alone: it runs the whole suite, this test included.
Any other command that is not `python <script>` or `python -m <module>` fails: a new kind of command
needs its own rule here.
"""
import functools
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FENCED_BASH = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
REPOSITORY_FOLDERS = ("benchmarks/", "detrx/", "docs/", "tests/", "csrc/")
NOT_RUN = [(("pip", "install"), "installs packages into the environment; CI (.ci/run) runs the README's install"),
           (("pytest",), "runs the whole suite, this test included")]


def readme_commands(text):
    """The commands of the bash blocks of a README text, as word lists: continuation lines joined,
    comments dropped, `&&` chains split."""
    commands = []
    for block in FENCED_BASH.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            command = []
            for word in shlex.split(line, comments=True) + ["&&"]:
                if word != "&&":
                    command.append(word)
                elif command:
                    commands.append(command)
                    command = []
    return commands


def reason_not_run(words):
    """Why a recognised command is not run (see the module's docstring), or None."""
    for prefix, reason in NOT_RUN:
        if tuple(words[:len(prefix)]) == prefix and (prefix != ("pytest",) or len(words) == 1):
            return reason
    return None


def program(words):
    """The part of a `python <script>` or `python -m <module>` command that names what runs."""
    if words[0] != "python" or len(words) < 2:
        raise AssertionError(f"no rule for this README command (see this test's docstring): {shlex.join(words)}")
    return tuple(words[1:3]) if words[1] == "-m" else (words[1],)


def listed_options(help_output):
    """The options an argparse --help lists: the `--name` words of its option lines, before the
    description (the description and the program's docstring may name options it no longer has)."""
    invocations = re.findall(r"^ +(-\S.*?)(?: {2,}|$)", help_output, re.M)
    return {option for invocation in invocations for option in re.findall(r"--[\w-]+", invocation)}


@functools.lru_cache(maxsize=None)
def options_of(what):
    """The options of a program, from its --help run at the repository root (this tree's detrx)."""
    done = subprocess.run([sys.executable, *what, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"python {' '.join(what)} --help failed:\n{done.stderr[-3000:]}"
    return listed_options(done.stdout)


with open(os.path.join(ROOT, "README.md")) as readme:
    COMMANDS = readme_commands(readme.read())


def test_the_readme_commands_are_found():
    assert ["python", "benchmarks/attn.py"] in COMMANDS  # the first of the two commands, after its `&&`
    assert any(reason_not_run(words) for words in COMMANDS)
    assert len(COMMANDS) >= 8


def test_commands_are_split_joined_and_stripped_of_comments():
    text = ("```bash\npip install -e . && python a.py --x 1   # note\npython -m b \\\n  --y 2\n```\n"
            "```python\nc()\n```\n")
    assert readme_commands(text) == [["pip", "install", "-e", "."], ["python", "a.py", "--x", "1"],
                                     ["python", "-m", "b", "--y", "2"]]


def test_only_install_and_the_whole_suite_are_not_run():
    assert reason_not_run(["pip", "install", "-e", "."])
    assert reason_not_run(["pytest"])
    assert reason_not_run(["pytest", "tests/test_readme_commands.py"]) is None
    assert reason_not_run(["python", "benchmarks/attn.py"]) is None
    with pytest.raises(AssertionError, match="no rule"):
        program(["bash", "benchmarks/device_check.sh"])


def test_options_are_read_from_the_option_lines_only():
    output = ("usage: run.py [-h] [--pairs PAIRS]\n\nTrains pairs (--seeds, comma list).\n\noptions:\n"
              "  -h, --help     show this help message and exit\n  --pairs PAIRS  comma list, see --jobs\n"
              "  --work-dir WORK_DIR\n                 per-run logs\n")
    assert listed_options(output) == {"--help", "--pairs", "--work-dir"}


@pytest.mark.parametrize("words", COMMANDS, ids=[shlex.join(words)[:80] for words in COMMANDS])
def test_readme_command(words):
    reason = reason_not_run(words)
    if reason:
        pytest.skip(reason)
    what = program(words)
    for word in words:
        if word.startswith(REPOSITORY_FOLDERS):
            assert os.path.exists(os.path.join(ROOT, word)), f"{word} named by the README does not exist"
    listed = options_of(what)
    for option in (word.split("=")[0] for word in words[len(what) + 1:] if word.startswith("--")):
        assert option in listed, f"python {' '.join(what)} has no option {option} (README: {shlex.join(words)})"
