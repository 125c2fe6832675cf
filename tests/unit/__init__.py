"""Unit and property tests: in-process, no root, no network."""
