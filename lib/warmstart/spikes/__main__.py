"""``python -m warmstart.spikes``: see ``warmstart.spikes.cli``."""

import sys

from warmstart.spikes.cli import main

if __name__ == "__main__":
    sys.exit(main())
