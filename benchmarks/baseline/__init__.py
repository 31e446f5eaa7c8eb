"""The comparison baseline: the same API, with the model loaded by joblib and scored by scikit-learn."""
