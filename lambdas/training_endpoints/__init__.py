"""The training endpoints' lease function: creates the isolated training network's interface
endpoints before a training run and deletes them after it (`sds.kernel.endpoints`)."""
