"""Shared test configuration. Tier-specific fixtures live in each tier's conftest."""

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
