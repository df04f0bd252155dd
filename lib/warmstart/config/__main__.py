"""``python -m warmstart.config check|apply-profile``: see :mod:`warmstart.config.cli`."""

from warmstart.config.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
