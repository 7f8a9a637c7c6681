"""Cost model: device profiles (``devices``), the fusion-aware analytic model (``model``) and
the measured mode that profiles ops on this machine (``measured``)."""
