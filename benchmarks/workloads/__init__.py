"""The suite's workloads, one module a group: each lists WORKLOADS (and
maybe FULL_WORKLOADS and EXTRA_WORKLOADS) of benchmarks.workload.Workload.  The runner finds
every module in this folder; nothing here imports them."""
