"""``python -m b2mapo`` runs the command line."""

from b2mapo.cli import main

main()
