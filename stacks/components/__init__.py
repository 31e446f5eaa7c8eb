"""Reusable constructs: each folder-level unit of the system is one Construct defined here."""
