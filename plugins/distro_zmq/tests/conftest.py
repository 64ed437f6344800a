"""distro-zmq's tests: ``async def`` tests are run by distro_core.testing's plugin, bounded in time
(``distro_async_tests = true`` in pyproject.toml)."""
