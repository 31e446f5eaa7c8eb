"""The drift monitor Lambda: publishes one environment's daily drift figures as CloudWatch metrics
(the figures are `sds.kernel.drift`'s, as `sds monitor` reports them)."""
