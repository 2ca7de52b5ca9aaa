"""``dfa-report``: Nøkland (2016)'s Tables 1–3 from run records, our numbers beside the paper's.

Reads only files and never imports torch or the training code. One way through the package:

    spec      what the report knows without a record: the contract, methods, protocol, paper values
    collect   records → runs (type-checked; protocol.py says how a run departs from its row's protocol)
    cells     runs → cells and statistics (mean ± std, flags, paired differences vs BP)
    views     cells → tables of display strings with footnotes
    render    views → terminal, Markdown, CSV, LaTeX
    build     the pipeline (collect → cells → views); table_markdown(paths) for one table
    plots, figures, tsne, gallery   the figures of ``--out``
    cli       the command line

This file stays light (no pandas, rich or matplotlib), so that ``dfa-report --help`` is instant.
"""
from __future__ import annotations


def main(argv=None) -> None:
    """The ``dfa-report`` command (see :mod:`dfa_cli.report.cli`)."""
    from .cli import main as cli_main
    cli_main(argv)
