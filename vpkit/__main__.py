"""`python -m vpkit ...` (also what `torchrun ... -m vpkit train ...` runs)."""

from vpkit.cli.main import main

main()
