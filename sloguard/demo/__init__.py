"""`sloguard demo`: the whole system on one machine, no cluster (issue 8).

workload.py builds the requests (Azure 2023 conversation arrivals, ShareGPT prompts, a class mix);
runner.py starts simulated engines (`sloguard sim serve` subprocesses) with a sidecar in front of each and
replays the workload once per policy; report.py turns the per-request records into the table, the JSON
and the plot; sloguard/demo_command.py is the command line.
"""
