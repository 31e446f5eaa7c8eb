"""Infrastructure for sds: one CDK Stage per environment (Registry, Inference, Training)."""
