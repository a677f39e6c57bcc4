"""Triton kernels of the fused ops and their launchers (one module per op family); the ops around them are
in deeplab_fast.ops. Importing a module here imports triton."""

import os

# Whether triton runs kernels through its CPU interpreter: TRITON_INTERPRET=1, which triton reads when it is
# imported. The launchers pick few, large programs there (each program costs tens of milliseconds).
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
