"""``python -m app`` is the postern command."""

from .cli import main

main()
