"""`python -m oprun` runs the CLI."""

from oprun.cli.main import run

run()
