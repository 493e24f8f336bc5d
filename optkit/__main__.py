"""`python -m optkit` runs the CLI."""

from optkit.cli import main

if __name__ == "__main__":  # not when something imports this module (multiprocessing's spawn re-imports __main__)
    main()
