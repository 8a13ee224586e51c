"""`python -m tsrepo`: the CLI. Guarded so that a process importing this module does not run it."""

from tsrepo.cli import run

if __name__ == "__main__":
    run()
