"""`python -m slimtext ...` (and `torchrun -m slimtext ...`) run the CLI."""

from slimtext.entry import main

main()
