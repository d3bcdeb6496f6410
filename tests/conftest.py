"""Root pytest configuration: registers the harness plugins shared by every suite."""

pytest_plugins: list[str] = []
