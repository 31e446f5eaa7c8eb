"""The pruner Lambda: deletes published versions of the inference function that no rollback,
deployment or alias can need (the rule is `sds.kernel.retention`)."""
