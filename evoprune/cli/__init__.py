"""The command line: subcommands and their up-front input checks."""
from evoprune.cli.main import main

__all__ = ["main"]
