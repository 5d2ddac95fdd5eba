"""`python -m netfwd` runs the CLI."""

from netfwd.cli import main

if __name__ == "__main__":
    main()
