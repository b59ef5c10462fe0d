"""Build script for lamina's compiled kernels.

* ``lamina._C``: C++ CPU kernels from ``csrc/cpu/*.cpp`` (OpenMP, -O3),
  bound with pybind11 in ``csrc/bindings/cpu_module.cpp``.
* ``lamina._C_cuda``: CUDA kernels from ``csrc/cuda/*.cu``, compiled by nvcc
  for sm_80 and sm_90 plus PTX, linked against the static CUDA runtime, bound
  in ``csrc/bindings/cuda_module.cpp``.

Environment:
  LAMINA_CUDA=auto|0|1   build the CUDA module when nvcc is found (auto, the
                         default), never (0), or fail if it cannot be (1).
  LAMINA_NATIVE=1        add -march=native to the C++ flags (not portable).
  LAMINA_CUDA_ARCHS      compute capabilities, default "80;90".
  CUDA_HOME / CUDA_PATH  where the toolkit lives, if nvcc is not on PATH.
"""

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
import sys
from glob import glob

from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext

def rel(*parts):
    return os.path.join(*parts)  # setuptools wants paths relative to setup.py


def find_cuda():
    """Return (cuda_home, nvcc), or (None, None) when there is no toolkit."""
    nvcc = shutil.which("nvcc")
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    if nvcc:
        homes += [os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), nvcc_top(nvcc)]
    homes.append("/usr/local/cuda")
    for home in homes:
        if home and os.path.isfile(os.path.join(home, "include", "cuda_runtime.h")):
            own = os.path.join(home, "bin", "nvcc")
            return home, own if os.path.isfile(own) else nvcc
    return None, None


def nvcc_top(nvcc):
    """The toolkit root as nvcc reports it (nvcc on PATH may be a wrapper)."""
    try:
        out = subprocess.run([nvcc, "--dryrun", "--version"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    for line in (out.stderr + out.stdout).splitlines():
        if "TOP=" in line:
            return line.split("TOP=", 1)[1].strip().strip('"')
    return None


def cxx_flags():
    # -fno-trapping-math and -fno-math-errno let GCC if-convert and vectorise the
    # branch-free math in csrc/cpu/vmath.h; lamina never reads FP exceptions or errno.
    flags = ["-O3", "-fopenmp", "-fno-trapping-math", "-fno-math-errno"]
    if os.environ.get("LAMINA_NATIVE") == "1":
        flags.append("-march=native")
    return flags


cpu_ext = Pybind11Extension(
    "lamina._C",
    sources=sorted(glob(rel("csrc", "cpu", "*.cpp"))) + [rel("csrc", "bindings", "cpu_module.cpp")],
    depends=sorted(glob(rel("csrc", "cpu", "*.h"))),  # a changed header rebuilds the module
    extra_compile_args=cxx_flags(),
    extra_link_args=["-fopenmp"],
    cxx_std=17,
)

ext_modules = [cpu_ext]

cuda_mode = os.environ.get("LAMINA_CUDA", "auto").lower()
if cuda_mode not in ("auto", "0", "1"):
    sys.exit(f"LAMINA_CUDA must be auto, 0 or 1, received {cuda_mode!r}")
cuda_home, nvcc = (None, None) if cuda_mode == "0" else find_cuda()
if cuda_mode == "1" and not nvcc:
    sys.exit("LAMINA_CUDA=1 but nvcc was not found (set CUDA_HOME or put nvcc on PATH)")

archs = [a.strip() for a in os.environ.get("LAMINA_CUDA_ARCHS", "80;90").split(";") if a.strip()]

if nvcc and cuda_home:
    lib_dirs = [d for d in (os.path.join(cuda_home, "lib64"), os.path.join(cuda_home, "lib")) if os.path.isdir(d)]
    cuda_ext = Pybind11Extension(
        "lamina._C_cuda",
        sources=[rel("csrc", "bindings", "cuda_module.cpp")],
        include_dirs=[os.path.join(cuda_home, "include")],
        library_dirs=lib_dirs,
        libraries=["cudart_static", "rt", "pthread", "dl"],
        extra_compile_args=["-O3", f'-DLAMINA_CUDA_ARCHS="{",".join("sm_" + a for a in archs)},sm_90a (wgmma)"'],
        cxx_std=17,
    )
    cuda_ext.cuda_sources = sorted(glob(rel("csrc", "cuda", "*.cu")))
    ext_modules.append(cuda_ext)
elif cuda_mode == "0":
    print("lamina: LAMINA_CUDA=0: building the CPU module lamina._C only")
else:
    print("lamina: nvcc not found (set CUDA_HOME or put nvcc on PATH): building the CPU module lamina._C only")


SM90A_ONLY = {"gemm_wgmma.cu", "conv_wgmma.cu"}
SM90A_GENCODE = ["-gencode", "arch=compute_90a,code=sm_90a"]


class BuildExt(build_ext):
    """build_ext that first compiles an extension's .cu files with nvcc."""

    def build_extension(self, ext):
        cu = getattr(ext, "cuda_sources", None)
        if cu:
            ext.extra_objects = list(ext.extra_objects or []) + self._nvcc(cu)
        super().build_extension(ext)

    def _nvcc(self, sources):
        os.makedirs(self.build_temp, exist_ok=True)
        gencode = []
        for a in archs:
            gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
        gencode += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]  # PTX for newer GPUs
        commands = []
        for src in sources:
            obj = os.path.join(self.build_temp, os.path.basename(src) + ".o")
            # wgmma and TMA exist only as sm_90a code; gemm_tc.cu calls that
            # kernel on compute capability 9.0 devices alone.
            codes = SM90A_GENCODE if os.path.basename(src) in SM90A_ONLY else gencode
            # --threads: a file's targets (one per -gencode) compile in parallel, so the longest file
            # (conv.cu) does not hold the build for three serial passes
            commands.append([nvcc, "-O3", "-std=c++17", "-Xcompiler", "-fPIC", "--expt-relaxed-constexpr",
                             "--threads", str(len(codes) // 2), "-cudart", "static", *codes, "-c", src, "-o", obj])
        for cmd in commands:
            print("lamina: " + " ".join(cmd))
        # nvcc is single-threaded and each file builds for every arch: one process per core.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for cmd, rc in zip(commands, pool.map(lambda c: subprocess.call(c), commands)):
                if rc != 0:
                    raise subprocess.CalledProcessError(rc, cmd)
        return [cmd[-1] for cmd in commands]


setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt})
