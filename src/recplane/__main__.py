"""`python -m recplane` runs the CLI."""

from recplane.cli import main

main()
