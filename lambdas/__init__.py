"""The AWS Lambda functions' entry points (`lambdas.<function>.handler`), thin over `sds.kernel`.

Run before any entry point: on Lambda (AWS_LAMBDA_FUNCTION_NAME is set), numpy's OpenBLAS is
limited to one thread unless the function's configuration says otherwise. At import OpenBLAS
starts a thread per core, which spin while the cold start runs on the function's share of a vCPU:
measured on Python 3.12 with the inference bundle, importing the handler took 298 ms of CPU
(193 ms wall) with them and 178 ms (167 ms wall) without. Nothing here multiplies matrices large
enough to gain from them, and ONNX Runtime has its own threads. Processes on this machine that
import these modules (`sds serve`, `sds prune`) keep numpy's defaults.
"""

import os

if "AWS_LAMBDA_FUNCTION_NAME" in os.environ:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
