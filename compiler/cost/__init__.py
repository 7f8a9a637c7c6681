"""Cost model: device profiles (``devices``), the fusion-aware analytic model (``model``), the
profiler that times ops and whole graphs on this machine (``profile``) and the measured mode
built on it (``measured``)."""
