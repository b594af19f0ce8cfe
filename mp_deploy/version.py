"""The package's version: a leaf, so that anything can read it without importing the package's front door."""
__version__ = "0.1.0"
