"""The package version, in the lowest layer so that any module can read it (docs/architecture.md)."""

__version__ = "0.1.0"
