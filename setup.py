"""The optional C extension; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # Optional: without a C compiler erq installs and runs without it
        # (see "Appends without the GIL" in erq/journal/engine.py, and
        # erq/journal/hot.py).
        Extension(
            "erq.journal._engine",
            ["erq/journal/_engine.c", "erq/journal/_hot.c"],
            optional=True,
        ),
    ]
)
