# shellcheck shell=bash
# Job backend of the recipe's stages: source it after path.sh ('. ./cmd.sh').
#
#   cmd_backend=local  (default) jobs run on this machine through utils/run_local.sh
#   cmd_backend=slurm  jobs are submitted with sbatch through utils/run_slurm.sh; resources map
#                      to sbatch flags as conf/slurm.conf says (the recipe's conf/slurm.conf if it
#                      has one, else the repository's)
#
# Choose with 'cmd_backend=slurm ./run.sh ...' or './run.sh --cmd_backend slurm ...'.
# Stages call "$train_cmd [--num_threads N] LOG COMMAND" for CPU work, "$decode_cmd" for
# inference and "$cuda_cmd --gpu N" for GPU work.
cmd_backend=${cmd_backend:-local}
case "$cmd_backend" in
  local)
    export train_cmd="utils/run_local.sh"
    export decode_cmd="utils/run_local.sh"
    export cuda_cmd="utils/run_local.sh"
    ;;
  slurm)
    export train_cmd="utils/run_slurm.sh"
    export decode_cmd="utils/run_slurm.sh"
    export cuda_cmd="utils/run_slurm.sh --gpu 1"
    ;;
  *)
    echo "cmd.sh: unknown cmd_backend '$cmd_backend' (expected local or slurm)" >&2
    return 1 2>/dev/null || exit 1
    ;;
esac
