"""The REST API: one router per resource (DESIGN.md §5)."""
