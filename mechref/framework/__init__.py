"""What every analysis stands on, with no model in it: settings (one object for Python, config files
and the command line), resumable stages and their manifests, checks before the work starts, output
ownership, atomic I/O, the stage clock, and where the cache lives."""
