"""The SPMD tests' workers are forks of a process that has imported TensorFlow, as every
test's are (``tests/conftest.py``); coverage measures them there."""
