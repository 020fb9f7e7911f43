"""python -m evoprune -> the command-line interface."""
from evoprune.cli.main import main

raise SystemExit(main())
