"""``python -m app`` is the postern command."""

from app.cli import main

if __name__ == "__main__":  # not when a spawned build process imports this module
    main()
