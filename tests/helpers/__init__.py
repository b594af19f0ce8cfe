"""Small programs the tests run in fresh processes, from tests/ as `python -m helpers.<name>` (see
tests/test_kernels.py `_run_helper`): a crash, a missing package or a GPU target set up there cannot touch the
test process. Each prints `ok` (or what the test reads) and asserts what it checks."""
