"""What the benchmarks share: moto and the gateway as subprocesses
(services), each process's CPU and memory (process_usage), the machine and
code a run measured (run_header), the command line, Markdown tables, a run
with a deadline (bounded_run) and the benchmarks' own error."""
