"""Run the emulated CUDA kernel tests (tests/test_cuda_emulated.py) with the
kernels built under a sanitizer, the CPU stand-ins for compute-sanitizer:

* ``address``: AddressSanitizer, as memcheck: a read or write past any array
  (each test's exactly-sized NumPy buffers, a ``__shared__`` array, or the
  dynamic shared memory the launch asked for) stops the run with a report;
  with it UndefinedBehaviorSanitizer, for what faults on a GPU but passes on
  x86 (a misaligned vector load) and for overflowing signed index arithmetic.
* ``thread``: ThreadSanitizer, as racecheck: each CUDA thread is a CPU thread
  and each barrier a ``std::barrier``, so two threads touching the same
  shared or global word without a barrier between them (a missing
  ``__syncthreads``, a warp reading a slot the next reduction overwrites) are
  reported, even when the emulator's ordering happened to give the right
  numbers.

    python tests/emu/sanitize.py address          # a spread of the cases (CI)
    python tests/emu/sanitize.py thread --all     # every case (~8 min on 2 cores)
    python tests/emu/sanitize.py thread -- -k batchnorm   # pytest's own options after --
    python tests/emu/sanitize.py address --device # the GPU tests on the emulated device

With ``--device`` the tests are the GPU tests (pytest -m gpu) on the emulated
device of tests/emu/device.py, whose ``lamina._C_cuda`` (the pybind11
bindings, the launchers and every kernel, 16-bit convolution included) is
built under the sanitizer: lamina's Python drives the kernels with CuPy's
arrays (NumPy buffers here, each with the sanitizer's guard bytes around it).

The sanitizer's runtime must be loaded before Python starts, so this runs
pytest in a child process with it preloaded; reports go to files, read back
here.  The interpreter is ``sys.executable`` (not a shell wrapper, which would
be run under the preloaded runtime itself).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUNTIMES = {"address": "libasan.so", "thread": "libtsan.so"}
SUBSET = 4  # cases kept per test function by default, drawn at random (seeded by the test name)


def runtime(sanitizer):
    """Path of the sanitizer's shared runtime from the C++ compiler, or None."""
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if cxx is None:
        return None
    r = subprocess.run([cxx, f"-print-file-name={RUNTIMES[sanitizer]}"], capture_output=True, text=True, check=False)
    path = r.stdout.strip()
    return path if r.returncode == 0 and os.path.isabs(path) and os.path.isfile(path) else None


def preload(lib):
    """LD_PRELOAD for the sanitizer runtime ``lib``: with the C++ runtime after it,
    so that the runtime's interceptor of C++ exceptions finds the real
    ``__cxa_throw`` when it starts (the interpreter is not linked with
    libstdc++, and a pybind11 module's exceptions would stop the run)."""
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    r = subprocess.run([cxx, "-print-file-name=libstdc++.so.6"], capture_output=True, text=True, check=False)
    path = r.stdout.strip()
    return f"{lib}:{path}" if r.returncode == 0 and os.path.isabs(path) and os.path.isfile(path) else lib


def unusable(sanitizer):
    """Why ``sanitizer`` cannot run here (None when it can): no runtime, or one
    that fails to start under this interpreter (TSan needs a memory layout
    that some kernels' address-space randomisation does not give it)."""
    lib = runtime(sanitizer)
    if lib is None:
        return f"the C++ compiler has no {sanitizer} sanitizer runtime ({RUNTIMES[sanitizer]})"
    env = dict(os.environ, LD_PRELOAD=lib, ASAN_OPTIONS="detect_leaks=0")
    r = subprocess.run([sys.executable, "-c", "import numpy"], env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return f"the {sanitizer} sanitizer's runtime does not start here: {(r.stderr.strip() or f'exit {r.returncode}')[-300:]}"
    return None


def run(sanitizer, subset=SUBSET, pytest_args=(), device=False):
    """Run the emulated tests (``device``: the GPU tests on the emulated device)
    under ``sanitizer``; returns (exit status, pytest's output, the sanitizer's
    reports as one string: empty when clean)."""
    lib = runtime(sanitizer)
    if lib is None:
        raise RuntimeError(f"the {sanitizer} sanitizer's runtime ({RUNTIMES[sanitizer]}) was not found")
    with tempfile.TemporaryDirectory(prefix=f"lamina-{sanitizer}-") as tmp:
        log = os.path.join(tmp, "report")
        env = dict(os.environ)
        env.update(
            LAMINA_EMU_SANITIZE=sanitizer,
            LAMINA_EMU_SUBSET=str(subset),
            LD_PRELOAD=preload(lib),
            # NumPy's BLAS threads are not instrumented: one is enough for the references
            OPENBLAS_NUM_THREADS="1",
            OMP_NUM_THREADS="1",
            PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        )
        if sanitizer == "address":
            env["ASAN_OPTIONS"] = f"detect_leaks=0:log_path={log}"  # the interpreter's own allocations are not leaks
            # UndefinedBehaviorSanitizer, built in with address (emulate.py), reports on stderr (its
            # log_path is not honoured when its runtime arrives with the emulator): pytest runs with -s
            env["UBSAN_OPTIONS"] = "print_stacktrace=1"
        else:
            env["TSAN_OPTIONS"] = f"log_path={log}:halt_on_error=0"
        if device:
            env["LAMINA_EMU_DEVICE"] = "1"
        tests = ["-m", "gpu"] if device else [str(ROOT / "tests" / "test_cuda_emulated.py")]
        cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-p", "sanitize_subset",
               *tests, *pytest_args]
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        reports = "".join(p.read_text(errors="replace") for p in sorted(Path(tmp).glob("report*")))
    output = r.stdout + r.stderr
    start = output.find("runtime error:")
    if start >= 0:  # UBSan: the report and its stack, from its line on
        reports += output[output.rfind("\n", 0, start) + 1:][:8000]
    return r.returncode, output, reports


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sanitizer", choices=sorted(RUNTIMES))
    parser.add_argument("--all", action="store_true", help="every case, not a spread of each test's cases")
    parser.add_argument("--device", action="store_true", help="the GPU tests on the emulated device")
    args, pytest_args = parser.parse_known_args()  # the rest goes to pytest, e.g. -- -k batchnorm
    pytest_args = [a for a in pytest_args if a != "--"]
    status, output, reports = run(args.sanitizer, 0 if args.all else SUBSET, pytest_args, args.device)
    print(output.rstrip())
    if reports:
        print(reports.rstrip())
    print(f"{args.sanitizer}: {'clean' if status == 0 and not reports else 'FAILED'}")
    return 0 if status == 0 and not reports else 1


if __name__ == "__main__":
    sys.exit(main())
