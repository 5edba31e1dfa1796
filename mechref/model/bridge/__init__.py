"""The forwards mechref installs on TransformerLens's bridge (grouped-query attention, lean norms),
fenced: they are installed only on TransformerLens versions and sources they were verified on
(:mod:`mechref.model.bridge.fence`); otherwise the bridge's own forwards run, with one warning."""
