"""Test support code: stand-ins for services the test suite cannot run for real."""
