"""`sds`, the command line: one module per command over `sds.ops`."""
