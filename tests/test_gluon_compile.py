"""The Gluon kernel compiles for sm_90 with the installed Triton, on a machine without a GPU.
CI installs the newest Triton while the GPU machine runs 3.6 (the only version the dispatch
trusts unless ACCEL_GLUON=1, TESTED_TRITON): a Gluon API change shows here first, as 3.9's
renamed barrier and TMA copies did (NOTES 49; 3.7 and 3.8 compile it too, NOTES 50)."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

from accel.kernels import gluon_attention as ga  # noqa: E402

HOPPER_SHARED_BYTES = 227 * 1024  # the most shared memory a CTA can have on H100 / H200
# The dispatched configurations: per head (192-key blocks), per token with smooth-V's mean, Q
# quantized in the kernel, D = 64 (three consumer warpgroups).
CONFIGS = {"head": (128, False, False, False), "token+vmean": (128, True, False, True),
           "q-in-kernel": (128, False, True, False), "d64": (64, False, False, False)}

# Run in a fresh interpreter: under TRITON_INTERPRET (the suite's default on a CPU) the jit
# decorators build interpreter functions, which the compiler cannot take.
_COMPILE = """
import json, re, sys
from accel.kernels import gluon_attention as ga
out = {}
for name, args in json.loads(sys.argv[1]).items():
    kernel = ga.compile_for_hopper(*args)
    ptx = kernel.asm["ptx"]
    out[name] = {"wgmma": "wgmma.mma_async" in ptx, "cubin": bool(kernel.asm["cubin"]),
                 "shared": kernel.metadata.shared,
                 "maxnreg": [int(r) for r in re.findall(r"setmaxnreg\\.inc\\.sync\\.aligned\\.u32\\s+(\\d+)", ptx)]}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def compiled():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", _COMPILE, json.dumps(CONFIGS)], capture_output=True, text=True,
                       env=env, timeout=600)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.skipif(ga.gluon_api_reason() is not None, reason=str(ga.gluon_api_reason()))
@pytest.mark.parametrize("name", CONFIGS)
def test_gluon_kernel_compiles_for_hopper(compiled, name):
    """wgmma code in a cubin that fits an SM's shared memory, the consumer warpgroups raised to
    the registers WARP_GROUPS gives them."""
    result = compiled[name]
    assert result["wgmma"] and result["cubin"]
    assert 0 < result["shared"] <= HOPPER_SHARED_BYTES
    assert ga.WARP_GROUPS[CONFIGS[name][0]].consumer_regs in result["maxnreg"]
