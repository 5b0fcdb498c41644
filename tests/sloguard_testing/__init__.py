"""Helpers shared by the test tiers (importable as `sloguard_testing`; pytest puts tests/ on the path)."""
