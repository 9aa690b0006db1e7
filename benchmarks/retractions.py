"""Retractions compared: time per call, distance from the manifold, agreement order with exp,
and ArchBN training per constraint/retraction.

A thin wrapper around ``riemann-dnn bench retractions`` (the code is
:mod:`riemann_dnn.experiments.retractions`); every option of the command works here::

    python benchmarks/retractions.py --threads 1 --out results/bench-retractions
    python benchmarks/retractions.py --device cuda --steps 0 --no-archbn

Writes ``retractions.json``, ``retractions.md`` and PNG plots into ``--out`` and prints the
tables. See docs/retractions.md for what each column means and a measured run.
"""

from __future__ import annotations

import sys

from riemann_dnn.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", "retractions", *sys.argv[1:]]))
