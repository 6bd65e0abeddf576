"""erq: a durable message queue server that speaks the memcache protocol."""

__version__ = "1.0.0"

__all__ = ["__version__"]
