# Hostile input and faults (issue 18): the allocation-failure sweep, parameter checks, the generate CLI,
# the multi-sequence stress test; `make stress` runs the stress test long, `make fuzz` the fuzzers.
