"""Run the peers' own tie-related tests with their helper, then with tiegraph's drop-in (dev only)."""
