"""Tests that start no server: fakes that satisfy the real parts' protocols, subprocesses at
most."""
