"""Shared test configuration.

``async def`` tests run on a fresh event loop, bounded in time, by the conformance kit's pytest
plugin (``distro_async_tests = true`` in pyproject.toml): no async pytest plugin is needed.
"""
