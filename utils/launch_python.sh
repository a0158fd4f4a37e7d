#!/usr/bin/env bash
# Start a Python step on one process, or on several processes / GPUs / nodes through torchrun.
#
# Usage:
#   utils/launch_python.sh [options] -- MODULE [ARGS...]
#
#   One process on one node (ngpu <= 1 and nproc <= 1): runs  python -m MODULE ARGS...
#   Otherwise:  torchrun --nnodes=M --nproc_per_node=K ... -m MODULE ARGS...
#   where K = ngpu when ngpu > 0, else nproc (CPU processes, gloo backend).
#
# Options:
#   --ngpu N          GPUs (= processes) per node; 0 runs on the CPU          (default 0)
#   --nproc N         CPU processes per node when ngpu is 0 (tests, CPU runs) (default 1)
#   --num_nodes M     number of nodes                                          (default 1)
#   --node_rank R     rank of this node (default: $SLURM_NODEID, else 0)
#   --master_addr A   address of the rank-0 node (required when num_nodes > 1)
#   --master_port P   its port (default 29500 with several nodes; a single node picks a free
#                     port through torchrun --standalone unless P is given)
#   --python CMD      python interpreter (default: python)
#
# Every process sees S5_NGPU (the --ngpu value) and S5_DIST_BACKEND (nccl with GPUs, else
# gloo); torchrun adds RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT.
set -euo pipefail

ngpu=0
nproc=1
num_nodes=1
node_rank=""
master_addr=""
master_port=""
python=python
help_message=$(sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//')
. "$(dirname "$0")/parse_options.sh"

me=$(basename "$0")
if [ $# -lt 1 ]; then
  echo "$me: no Python module given (usage: $me [options] -- MODULE [ARGS...])" >&2
  exit 1
fi
module=$1
shift
if [[ "$module" == *.py || "$module" == */* ]]; then
  echo "$me: expected a module name such as s5lib.bin.train, got '$module'" >&2
  exit 1
fi
for value_name in ngpu nproc num_nodes; do
  if ! [[ "${!value_name}" =~ ^[0-9]+$ ]]; then
    echo "$me: --$value_name must be a non-negative integer, got '${!value_name}'" >&2
    exit 1
  fi
done
[ "$num_nodes" -ge 1 ] || { echo "$me: --num_nodes must be at least 1" >&2; exit 1; }

if [ "$ngpu" -gt 0 ]; then
  procs_per_node=$ngpu
  export S5_DIST_BACKEND=nccl
else
  procs_per_node=$(( nproc > 0 ? nproc : 1 ))
  export S5_DIST_BACKEND=gloo
fi
export S5_NGPU=$ngpu

if [ "$procs_per_node" -le 1 ] && [ "$num_nodes" -eq 1 ]; then
  exec "$python" -m "$module" "$@"
fi

launcher=(torchrun "--nnodes=$num_nodes" "--nproc_per_node=$procs_per_node")
if [ "$num_nodes" -gt 1 ]; then
  [ -n "$master_addr" ] || { echo "$me: --master_addr is required with --num_nodes $num_nodes" >&2; exit 1; }
  node_rank=${node_rank:-${SLURM_NODEID:-0}}
  launcher+=("--node_rank=$node_rank" "--master_addr=$master_addr" "--master_port=${master_port:-29500}")
elif [ -n "$master_port" ]; then
  launcher+=("--master_addr=${master_addr:-127.0.0.1}" "--master_port=$master_port")
else
  launcher+=(--standalone)
fi
exec "${launcher[@]}" -m "$module" "$@"
