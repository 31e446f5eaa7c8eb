"""The serving kernel: what the inference Lambda carries, and what everything else builds on.

Feature definitions and the feature function, the OpenAPI document, the model registry, the
verified model load, the lock file, and the contracts between layers (the function's settings,
the SSM discovery keys). It imports nothing from the rest of the project, and nothing here imports
scikit-learn, scipy or pickle: the Lambda bundle is this package plus `lambdas/`, so an edit
anywhere else never publishes a new Lambda version.
"""
