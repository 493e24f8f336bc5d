"""`python -m optkit` runs the CLI."""

from optkit.cli import main

if __name__ == "__main__":  # not when a warm start's child imports this main module again (isolate.py)
    main()
