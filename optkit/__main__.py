"""`python -m optkit` runs the CLI."""

from optkit.cli import main

main()
