"""``python -m warmstart.vocab_swap``: see :mod:`warmstart.vocab_swap.cli`."""

import sys

from warmstart.vocab_swap.cli import main

sys.exit(main())
