"""Optional integrations of the solved policies into other serving systems (each its own extra)."""
