"""The command line (DESIGN section 4): click commands that parse, call and print; nothing else.

What a command shows is built in report/ (JSON summaries, tables, export); heavy modules are imported
inside commands so `fpwatch --help` starts fast.
"""

from fpwatch.cli import passes, report, setup, state, state_copy
from fpwatch.cli.app import cli, main

__all__ = ["cli", "main", "passes", "report", "setup", "state", "state_copy"]
