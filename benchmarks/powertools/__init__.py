"""Powertools for AWS Lambda against our handler: a variant handler and its `make bench` section."""
