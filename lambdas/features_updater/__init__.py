"""The feature updater Lambda: SQS batches of activity events folded into the feature table."""
