"""`portrait-queue`: the command-line client (cli.main:main)."""
