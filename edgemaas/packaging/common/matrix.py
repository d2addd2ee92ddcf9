"""Which inference runtime wheels each Lambda Python runtime and architecture gets, and why.

Lambda's python3.10 and python3.11 run on Amazon Linux 2 (glibc 2.26); python3.12 and python3.13 on Amazon Linux
2023 (glibc 2.34). A wheel's manylinux tag is not enough: the versions below were chosen by reading the
`GLIBC_x.y` symbol versions their ELF files need (`edgemaas.packaging.common.glibc`), and every package is checked
again the same way when it is written. Measured 2026-12-01:

- ai-edge-litert 2.3.0 (cp312/cp313): manylinux_2_27 tag; the Interpreter's libraries need 2.27 on x86_64 and 2.34 on
  aarch64 (libpywrap_litert_common.so; exactly AL2023's): fits AL2023 only.
- ai-edge-litert 1.4.0 (cp310/cp311) x86_64: needs glibc 2.17; aarch64: 2.30 (libLiteRtRuntimeCApi.so). 1.2/1.3
  aarch64: 2.29. tflite-runtime 2.13/2.14: tagged manylinux2014 but needs 2.29, and has no aarch64 wheel for 3.10+.
  So AL2 x86_64 gets ai-edge-litert 1.4.0, and AL2 arm64 has no TFLite interpreter that loads.
- onnxruntime 1.16.3: manylinux2014 for cp310/cp311 on both architectures, needs 2.17; built for numpy 1.x.
  onnxruntime 1.32 and numpy 2.4 need 2.27/2.28.
- numpy 1.26.4: needs 2.17; both AL2 runtimes above import with it (numpy >= 2.3 needs 2.27).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgemaas.packaging.common.dependencies import RUNTIME_FOR_FORMAT, pinned
from edgemaas.packaging.common.glibc import Version, version_text

LAMBDA_PYTHONS = ("3.10", "3.11", "3.12", "3.13")
ARCHES = ("x86_64", "arm64")
FORMATS = ("tflite", "onnx")
ELF_MACHINE = {"x86_64": "EM_X86_64", "arm64": "EM_AARCH64"}


@dataclass(frozen=True)
class LambdaOS:
    name: str
    glibc: Version


AL2 = LambdaOS("Amazon Linux 2", (2, 26))
AL2023 = LambdaOS("Amazon Linux 2023", (2, 34))
LAMBDA_OS = {"3.10": AL2, "3.11": AL2, "3.12": AL2023, "3.13": AL2023}

# Amazon Linux 2: fixed releases whose ELF files need glibc <= 2.26 (see the module docstring).
_AL2_NUMPY = "numpy==1.26.4"
_AL2 = {
    ("tflite", "x86_64"): (["ai-edge-litert==1.4.0"],
                           "ai-edge-litert 2.x needs glibc 2.27; 1.4.0 (manylinux_2_17) needs 2.17; tflite-runtime "
                           "2.14 is tagged manylinux2014 but needs 2.29"),
    ("onnx", "x86_64"): (["onnxruntime==1.16.3"],
                         "the newest onnxruntime with manylinux2014 wheels (needs 2.17); built for numpy 1.x"),
    ("onnx", "arm64"): (["onnxruntime==1.16.3"],
                        "the newest onnxruntime with manylinux2014 wheels (needs 2.17); built for numpy 1.x"),
}
_AL2_NO_TFLITE_ARM = ("no TFLite interpreter wheel loads on Amazon Linux 2 arm64: ai-edge-litert 1.2-1.4 aarch64 "
                      "need glibc 2.29-2.30, 2.x needs 2.34, tflite-runtime has no aarch64 wheel for 3.10+")


@dataclass(frozen=True)
class RuntimePlan:
    """What a (Python, arch) Lambda target gets for a model of `wanted` format."""

    python: str
    arch: str
    wanted: str  # the model format asked for
    ships: str | None  # the format whose runtime fits: `wanted`, the other one, or None when neither fits
    requirements: tuple[str, ...]  # numpy + the runtime, pinned
    why: str

    @property
    def os(self) -> LambdaOS:
        return LAMBDA_OS[self.python]

    @property
    def runtime(self) -> str:
        return RUNTIME_FOR_FORMAT[self.ships] if self.ships else "-"


def _fits(python: str, arch: str, fmt: str) -> tuple[list[str], str] | None:
    """Requirements and reason for `fmt` on (python, arch), or None when no wheel of its runtime fits."""
    if LAMBDA_OS[python] is AL2023:
        return ([pinned("numpy"), pinned(RUNTIME_FOR_FORMAT[fmt])],
                f"glibc {version_text(AL2023.glibc)}: the releases installed here, which evaluated the model "
                "(measured: numpy 2.4 and onnxruntime 1.32 need 2.27-2.28; ai-edge-litert 2.3.0 needs 2.27 on "
                "x86_64 and exactly 2.34 on arm64)")
    chosen = _AL2.get((fmt, arch))
    if chosen is None:
        return None
    requirements, why = chosen
    return [_AL2_NUMPY, *requirements], f"glibc {version_text(AL2.glibc)}: {why}; numpy 1.26.4 (2.3+ needs 2.27)"


def plan(python: str, arch: str, model_format: str) -> RuntimePlan:
    """The wheels a model of `model_format` gets on Lambda's python`python` `arch`; the other format when its own
    runtime has no wheel that fits (ships=None when neither fits)."""
    if python not in LAMBDA_OS:
        raise ValueError(f"Lambda has no python{python} runtime (it runs {', '.join(LAMBDA_PYTHONS)})")
    own = _fits(python, arch, model_format)
    if own is not None:
        return RuntimePlan(python, arch, model_format, model_format, tuple(own[0]), own[1])
    other = next(f for f in FORMATS if f != model_format)
    alternative = _fits(python, arch, other)
    reason = _AL2_NO_TFLITE_ARM if model_format == "tflite" else f"no {RUNTIME_FOR_FORMAT[model_format]} fits"
    if alternative is None:
        return RuntimePlan(python, arch, model_format, None, (), reason)
    return RuntimePlan(python, arch, model_format, other, tuple(alternative[0]),
                       f"{reason}; ships the {other} variant: {alternative[1]}")


def matrix() -> list[RuntimePlan]:
    return [plan(python, arch, fmt) for python in LAMBDA_PYTHONS for arch in ARCHES for fmt in FORMATS]


def explain_runtime(python: str | None = None, arch: str | None = None) -> str:
    """The matrix as a Markdown table (README and `edgemaas package --explain-runtime`), optionally one target."""
    rows = [p for p in matrix() if (python is None or p.python == python) and (arch is None or p.arch == arch)]
    if not rows:
        raise ValueError(f"no Lambda runtime python{python} {arch}")
    lines = ["| Lambda runtime | arch | OS (glibc) | model | ships | wheels | why |",
             "|---|---|---|---|---|---|---|"]
    for p in rows:
        ships = p.ships if p.ships == p.wanted else (f"{p.ships} (fallback)" if p.ships else "nothing fits")
        lines.append(f"| python{p.python} | {p.arch} | {p.os.name} ({version_text(p.os.glibc)}) | {p.wanted} | "
                     f"{ships} | {', '.join(p.requirements) or '-'} | {p.why} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m edgemaas.packaging.common.matrix [PYTHON [ARCH]]: the table, until the CLI flag
    import sys

    print(explain_runtime(*(sys.argv[1:3] or [])), end="")
