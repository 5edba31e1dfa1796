"""mechref's version, in a module of its own so that any layer can read it without importing the package
(and with it transformers and TransformerLens).

>>> from mechref.version import __version__
>>> __version__.count(".")
2
"""

__version__ = "0.1.0"
