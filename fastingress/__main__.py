"""`python -m fastingress` is the `fastingress` command."""

from fastingress.cli import main

main()
