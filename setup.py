"""The optional C extension; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # Optional: without a C compiler erq installs and runs without it
        # (see "Appends without the GIL" in erq/journal.py).
        Extension("_erq_writer", ["erq/_writer.c"], optional=True),
    ]
)
