"""sds: serverless data science on AWS.

`sds.kernel` is the serving kernel, the only part of this package the inference Lambda carries;
`sds.config` and `sds.progress` serve the CDK app, training and the CLI; `sds.ops` and `sds.cli`
are the operator application on top. docs/architecture.md shows the layers and which way imports
go (a test keeps both honest).
"""

__version__ = "0.1.0"
