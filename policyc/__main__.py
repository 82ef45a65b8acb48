"""`python -m policyc` runs the command line."""

from .cli import main

main()
