"""Builds the Cython extensions (physics_ext's core, the envs' interval kernel) with OpenMP.

STGYM_NATIVE=1 adds -march=native (faster, but the binary no longer moves between CPUs).
"""
import os
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

compile_args = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-math-errno"]
if os.environ.get("STGYM_NATIVE") == "1":
    compile_args.append("-march=native")

extensions = [
    Extension(
        ".".join(path.with_suffix("").parts),
        [str(path)],
        include_dirs=[numpy.get_include()],
        extra_compile_args=compile_args,
        extra_link_args=["-fopenmp"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for path in [*sorted(Path("physics_ext").glob("*.pyx")), Path("producers/envs/_intervals.pyx")]
]

setup(ext_modules=cythonize(extensions, include_path=["."], compiler_directives={"language_level": 3}))
