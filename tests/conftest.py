"""Root pytest configuration: registers the harness plugins shared by every suite."""

pytest_plugins: list[str] = [
    "tests.stub.fixtures",
    "tests.harness.k8s_fixtures",
    "tests.harness.idm_fixtures",
    "tests.harness.health",
]
