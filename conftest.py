"""Root pytest configuration: the chapters nbval executes are kept for the
book's build (``_ext/notebook_cache.py``; pytest's pythonpath has ``_ext``)."""

pytest_plugins = ["notebook_cache"]
