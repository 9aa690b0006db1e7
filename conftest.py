"""Collect every fenced Python example in README.md and docs/ as a test (sybil).

The examples of one page run in order in one namespace, so a page may define names once and
use them later; a block preceded by ``<!-- skip: next "why" -->`` is reported as skipped.
"""

from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser


def _setup(namespace: dict) -> None:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)  # small examples on a shared machine: threads only add overhead


pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(), SkipParser()],
    patterns=["README.md", "docs/*.md", "docs/**/*.md"],
    excludes=["docs/_build/*"],
    setup=_setup,
).pytest()
