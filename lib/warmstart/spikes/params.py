"""Constants, the log error and the ``robust`` method's parameters.

``RobustParams`` and ``METHODS`` are part of the params schema, so they live in
:mod:`warmstart.config.spikes` (the config package imports nothing of the spike
package); they are re-exported here for the spike modules.
"""

from __future__ import annotations

from warmstart.config.spikes import METHODS, RobustParams

__all__ = ["METHODS", "MAD_TO_SIGMA", "SpikeLogError", "RobustParams"]

MAD_TO_SIGMA = 1.482602218505602  # 1 / Phi^-1(3/4): MAD of a normal -> sigma


class SpikeLogError(ValueError):
    """A log that cannot be read as a loss curve; the message names the problem."""
