"""sds: serverless data science on AWS. Shared by training, the inference Lambda and the CLI.

Modules imported on the serving path (features, registry, lock, serving) must not import
scikit-learn, scipy or pickle; training-only code lives in the top-level `training` package.
"""

__version__ = "0.1.0"
