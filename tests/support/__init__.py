"""Helpers and session fixtures shared by the test packages (no tests here): test modules import
from tests.support and tests.data only, never from another test package or a conftest."""
