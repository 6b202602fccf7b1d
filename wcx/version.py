"""wcx's version (one place; the package metadata, the CLI and export records read it)."""

__version__ = "0.1.0"
