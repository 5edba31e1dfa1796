"""The model: loading (embedded, GGUF, local folders, hub ids) into TransformerLens's bridge,
chat templates, devices and batch sizes, shared-prefix caching and logits. Everything that touches
TransformerLens internals lives in :mod:`mechref.model.bridge`."""
