"""smpc benchmarks.

This file makes `benchmarks` a regular package: crypten's wheel installs its own
top-level `benchmarks` package into site-packages, which would otherwise win over
this directory on `import benchmarks.<module>` from the repository root.
"""
