"""A Ray cluster of separate raylets on this machine, for the cluster tests: a head and worker nodes
started with ``ray.cluster_utils.Cluster`` (as Ray's own tests do), in a process of its own, so that
the test process keeps no Ray state of it. Prints one JSON line (the address, the worker raylets'
process ids) and keeps the cluster up until its standard input closes.

    python tests/_cluster.py HEAD_CPUS WORKERS
"""

import json
import sys

from ray.cluster_utils import Cluster

head_cpus, workers = int(sys.argv[1]), int(sys.argv[2])
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "include_dashboard": False})
nodes = [cluster.add_node(num_cpus=1) for _ in range(workers)]
cluster.wait_for_nodes()
print(json.dumps({"address": cluster.address,
                  "raylets": [n.all_processes["raylet"][0].process.pid for n in nodes]}), flush=True)
sys.stdin.read()
cluster.shutdown()
