"""`python -m slimtext ...` (and `torchrun -m slimtext ...`) run the CLI."""

from slimtext.cli import main

main()
