"""Tests of the recipe shell machinery: parse_options.sh, the job runners, launch_python.sh,
egs/TEMPLATE/setup.sh and the shared stage script. Each test runs bash in a temporary folder."""
import os
import shutil
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UTILS = REPO / "utils"
TEMPLATE = REPO / "egs" / "TEMPLATE"
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("cmd_backend", "PYTHONPATH")}
    env.update(extra)
    return env


def run(args, cwd, env=None, check_rc=None):
    """Run a command line; returns the CompletedProcess (text output)."""
    result = subprocess.run(args, cwd=cwd, env=env or clean_env(), capture_output=True,
                            text=True, timeout=120)
    if check_rc is not None:
        assert result.returncode == check_rc, (result.stdout, result.stderr)
    return result


def write_script(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# ---------------------------------------------------------------- parse_options.sh

@pytest.fixture
def options_script(tmp_path):
    return write_script(tmp_path / "opts.sh", f"""#!/usr/bin/env bash
set -euo pipefail
stage=1
stop_stage=5
use_gpu=false
db_root="/default/db"
help_message="Usage: opts.sh [options] <dir>
  --stage N   first stage"
. {UTILS}/parse_options.sh
echo "stage=$stage stop_stage=$stop_stage use_gpu=$use_gpu db_root=[$db_root] nargs=$# args=[$*]"
""")


def test_parse_options_defaults_and_positional_arguments(options_script, tmp_path):
    out = run([str(options_script), "a", "b c"], tmp_path, check_rc=0).stdout
    assert out.strip() == "stage=1 stop_stage=5 use_gpu=false db_root=[/default/db] nargs=2 args=[a b c]"


def test_parse_options_dash_and_underscore_are_the_same(options_script, tmp_path):
    out = run([str(options_script), "--stop-stage", "3", "--stage", "2", "--db_root", "", "x"],
              tmp_path, check_rc=0).stdout
    assert "stage=2 stop_stage=3" in out and "db_root=[]" in out and "nargs=1 args=[x]" in out
    out = run([str(options_script), "--stop_stage=4", "--db-root=a b"], tmp_path, check_rc=0).stdout
    assert "stop_stage=4" in out and "db_root=[a b]" in out


def test_parse_options_double_dash_ends_options(options_script, tmp_path):
    out = run([str(options_script), "--stage", "7", "--", "--stage", "8"], tmp_path, check_rc=0).stdout
    assert "stage=7 " in out and "nargs=2 args=[--stage 8]" in out


def test_parse_options_unknown_option_is_an_error(options_script, tmp_path):
    result = run([str(options_script), "--stgae", "3"], tmp_path, check_rc=1)
    assert "unknown option --stgae" in result.stderr
    assert "stage=" not in result.stdout


def test_parse_options_option_without_value_is_an_error(options_script, tmp_path):
    result = run([str(options_script), "--stage"], tmp_path, check_rc=1)
    assert "--stage needs a value" in result.stderr


def test_parse_options_booleans_stay_booleans(options_script, tmp_path):
    result = run([str(options_script), "--use_gpu", "yes"], tmp_path, check_rc=1)
    assert "--use_gpu" in result.stderr and "true or false" in result.stderr
    assert "use_gpu=true" in run([str(options_script), "--use-gpu", "true"], tmp_path, check_rc=0).stdout


def test_parse_options_config_file_is_read_first(options_script, tmp_path):
    config = tmp_path / "my.conf"
    config.write_text("stage=4\nstop_stage=9\n")
    # --config comes after --stop_stage on the command line, yet the command line wins
    out = run([str(options_script), "--stop_stage", "6", "--config", str(config)], tmp_path,
              check_rc=0).stdout
    assert "stage=4 stop_stage=6" in out
    result = run([str(options_script), "--config", str(tmp_path / "missing.conf")], tmp_path, check_rc=1)
    assert "missing.conf" in result.stderr


def test_parse_options_help_prints_the_usage(options_script, tmp_path):
    result = run([str(options_script), "--stage", "3", "--help"], tmp_path, check_rc=0)
    assert result.stdout.startswith("Usage: opts.sh [options] <dir>")
    assert "stage=" not in result.stdout


# ---------------------------------------------------------------- run_local.sh

def test_run_local_job_array_substitutes_job_in_log_and_command(tmp_path):
    run([str(UTILS / "run_local.sh"), "JOB=1:3", "logs/out.JOB.log", "echo", "job", "JOB", "|",
         "tr", "a-z", "A-Z"], tmp_path, check_rc=0)
    for job in (1, 2, 3):
        text = (tmp_path / f"logs/out.{job}.log").read_text()
        lines = text.splitlines()
        assert lines[0] == f"# echo job {job} | tr a-z A-Z"
        assert lines[1].startswith("# Started at")
        assert f"JOB {job}" in lines
        assert lines[-1].startswith("# Ended (code 0) at")


def test_run_local_single_job_quotes_arguments_with_spaces(tmp_path):
    run([str(UTILS / "run_local.sh"), "one.log", "printf", "[%s]", "a  b", "c"], tmp_path, check_rc=0)
    assert "[a  b][c]" in (tmp_path / "one.log").read_text()


def test_run_local_failure_is_propagated_and_names_the_log(tmp_path):
    result = run([str(UTILS / "run_local.sh"), "JOB=1:4", "log/x.JOB.log", "test JOB -ne 3"], tmp_path)
    assert result.returncode != 0
    assert "log/x.3.log" in result.stderr
    assert "# Ended (code 1)" in (tmp_path / "log/x.3.log").read_text()
    assert "# Ended (code 0)" in (tmp_path / "log/x.2.log").read_text()
    result = run([str(UTILS / "run_local.sh"), "JOB=1:3", "log/y.JOB.log", "exit 5"], tmp_path)
    assert result.returncode != 0 and "3 / 3 jobs failed" in result.stderr


def test_run_local_overwrites_logs_and_limits_parallel_jobs(tmp_path):
    trace = tmp_path / "trace.txt"
    command = f"echo start JOB >> {trace}; sleep 0.2; echo end JOB >> {trace}"
    for _ in range(2):
        run([str(UTILS / "run_local.sh"), "--max_jobs_run", "1", "JOB=1:3", "l/j.JOB.log", command],
            tmp_path, check_rc=0)
    assert (tmp_path / "l/j.2.log").read_text().count("# Started at") == 1
    lines = trace.read_text().split("\n")[:6]
    for i in range(0, 6, 2):  # one job at a time: every start is followed by its own end
        assert lines[i].replace("start", "end") == lines[i + 1]


def test_run_local_rejects_bad_arguments(tmp_path):
    assert "unknown option --bogus" in run([str(UTILS / "run_local.sh"), "--bogus", "1", "l.log", "true"],
                                           tmp_path, check_rc=1).stderr
    assert "empty job range" in run([str(UTILS / "run_local.sh"), "JOB=3:1", "l.log", "true"],
                                    tmp_path, check_rc=1).stderr


# ---------------------------------------------------------------- run_slurm.sh (fake sbatch)

FAKE_SBATCH = """#!/usr/bin/env bash
# Fake sbatch: records its arguments, then runs the array tasks one after the other.
printf '%s\\n' "$@" > "$FAKE_SBATCH_ARGS"
array=""
for a in "$@"; do case "$a" in --array=*) array=${a#--array=} ;; esac; done
script=${!#}
echo "Submitted batch job 4242"
range=${array%%\\%*}
if [ -n "$range" ]; then
  for ((i=${range%-*}; i<=${range#*-}; i++)); do
    [ "$i" = "${FAKE_SBATCH_SKIP_TASK:-}" ] && continue   # a task killed before it started
    SLURM_ARRAY_TASK_ID=$i bash "$script"
  done
else
  bash "$script"
fi
"""


@pytest.fixture
def slurm_env(tmp_path):
    bin_dir = tmp_path / "bin"
    write_script(bin_dir / "sbatch", FAKE_SBATCH)
    return clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_SBATCH_ARGS=str(tmp_path / "sbatch.args"))


def test_run_slurm_maps_options_to_sbatch_flags_and_runs_the_array(tmp_path, slurm_env):
    run([str(UTILS / "run_slurm.sh"), "--gpu", "2", "--mem", "4G", "--num-threads", "3",
         "--max_jobs_run", "2", "JOB=1:3", "exp/log/train.JOB.log", "echo", "task", "JOB"],
        tmp_path, env=slurm_env, check_rc=0)
    args = (tmp_path / "sbatch.args").read_text().splitlines()
    assert args[0] == "--export=ALL"  # from the 'command' line of conf/slurm.conf
    for flag in ("--gres=gpu:2", "--mem=4G", "--cpus-per-task=3", "--array=1-3%2", "--wait",
                 "--job-name=train"):
        assert flag in args
    assert args[-1] == "exp/log/q/train.sh"
    for job in (1, 2, 3):
        text = (tmp_path / f"exp/log/train.{job}.log").read_text()
        assert f"task {job}" in text and "# Ended (code 0)" in text


def test_run_slurm_defaults_and_custom_config(tmp_path, slurm_env):
    config = tmp_path / "site.conf"
    config.write_text("command sbatch --account=acme\n"
                      "default gpu=0\noption gpu=0 -p cpu\noption gpu=* -p gpu --gres=gpu:$0\n")
    run([str(UTILS / "run_slurm.sh"), "--config", str(config), "one.log", "true"], tmp_path,
        env=slurm_env, check_rc=0)
    args = (tmp_path / "sbatch.args").read_text().splitlines()
    assert args[:3] == ["--account=acme", "-p", "cpu"]
    assert not any(a.startswith("--array") for a in args)
    run([str(UTILS / "run_slurm.sh"), "--config", str(config), "--gpu", "4", "one.log", "true"],
        tmp_path, env=slurm_env, check_rc=0)
    args = (tmp_path / "sbatch.args").read_text().splitlines()
    assert "--gres=gpu:4" in args and "gpu" in args
    result = run([str(UTILS / "run_slurm.sh"), "--config", str(config), "--mem", "4G", "one.log", "true"],
                 tmp_path, env=slurm_env, check_rc=1)
    assert "--mem is not defined" in result.stderr


def test_run_slurm_reports_failed_and_killed_tasks(tmp_path, slurm_env):
    result = run([str(UTILS / "run_slurm.sh"), "JOB=1:3", "log/t.JOB.log", "test JOB -ne 2"],
                 tmp_path, env=slurm_env)
    assert result.returncode != 0 and "log/t.2.log" in result.stderr
    slurm_env["FAKE_SBATCH_SKIP_TASK"] = "3"
    result = run([str(UTILS / "run_slurm.sh"), "JOB=1:3", "log/k.JOB.log", "true"], tmp_path, env=slurm_env)
    assert result.returncode != 0
    assert "log/k.3.log" in result.stderr and "4242" in result.stderr


# ---------------------------------------------------------------- launch_python.sh

@pytest.fixture
def launch_env(tmp_path):
    """A fake torchrun that records its arguments, and a module that records how it was run."""
    bin_dir = tmp_path / "bin"
    write_script(bin_dir / "torchrun", f"""#!/usr/bin/env bash
printf '%s\\n' "$@" > {tmp_path}/torchrun.args
echo "backend=$S5_DIST_BACKEND ngpu=$S5_NGPU" >> {tmp_path}/torchrun.args
""")
    (tmp_path / "record_argv.py").write_text(
        "import os, sys\n"
        f"open({str(tmp_path / 'python.args')!r}, 'w').write("
        "'\\n'.join(sys.argv[1:] + [os.environ['S5_DIST_BACKEND']]))\n")
    return clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHONPATH=str(tmp_path))


def test_launch_python_runs_one_process_directly(tmp_path, launch_env):
    run([str(UTILS / "launch_python.sh"), "--ngpu", "1", "--", "record_argv", "--lr", "1e-3", "a b"],
        tmp_path, env=launch_env, check_rc=0)
    assert (tmp_path / "python.args").read_text().splitlines() == ["--lr", "1e-3", "a b", "nccl"]
    assert not (tmp_path / "torchrun.args").exists()


def test_launch_python_uses_torchrun_for_several_processes(tmp_path, launch_env):
    run([str(UTILS / "launch_python.sh"), "--ngpu", "4", "--", "s5lib.bin.train", "--epochs", "2"],
        tmp_path, env=launch_env, check_rc=0)
    args = (tmp_path / "torchrun.args").read_text().splitlines()
    assert args == ["--nnodes=1", "--nproc_per_node=4", "--standalone", "-m", "s5lib.bin.train",
                    "--epochs", "2", "backend=nccl ngpu=4"]
    run([str(UTILS / "launch_python.sh"), "--ngpu", "0", "--nproc", "2", "--", "m"],
        tmp_path, env=launch_env, check_rc=0)
    args = (tmp_path / "torchrun.args").read_text().splitlines()
    assert "--nproc_per_node=2" in args and args[-1] == "backend=gloo ngpu=0"


def test_launch_python_multi_node(tmp_path, launch_env):
    run([str(UTILS / "launch_python.sh"), "--ngpu", "2", "--num_nodes", "3", "--node_rank", "1",
         "--master_addr", "node01", "--master_port", "1234", "--", "m", "x"],
        tmp_path, env=launch_env, check_rc=0)
    args = (tmp_path / "torchrun.args").read_text().splitlines()
    assert args[:5] == ["--nnodes=3", "--nproc_per_node=2", "--node_rank=1", "--master_addr=node01",
                        "--master_port=1234"]
    assert args[5:8] == ["-m", "m", "x"]
    result = run([str(UTILS / "launch_python.sh"), "--ngpu", "2", "--num_nodes", "2", "--", "m"],
                 tmp_path, env=launch_env, check_rc=1)
    assert "--master_addr is required" in result.stderr


def test_launch_python_rejects_a_script_path(tmp_path, launch_env):
    result = run([str(UTILS / "launch_python.sh"), "--", "train.py"], tmp_path, env=launch_env, check_rc=1)
    assert "module name" in result.stderr


# ---------------------------------------------------------------- setup.sh and stages.sh

@pytest.fixture
def recipe(tmp_path):
    """A new recipe made by egs/TEMPLATE/setup.sh in a temporary folder."""
    result = run([str(TEMPLATE / "setup.sh"), str(tmp_path / "egs" / "mysys")], tmp_path, check_rc=0)
    assert "Created recipe" in result.stdout
    return tmp_path / "egs" / "mysys"


def test_setup_makes_a_recipe_with_shared_links(recipe):
    for name in ("path.sh", "cmd.sh", "stages.sh", "steps"):
        assert (recipe / name).is_symlink()
        assert (recipe / name).resolve() == TEMPLATE / name
    assert (recipe / "utils").resolve() == UTILS
    assert not (recipe / "conf").is_symlink()
    assert (recipe / "conf" / "prep_data.yaml").read_text() == (TEMPLATE / "conf" / "prep_data.yaml").read_text()
    assert (recipe / "local").is_dir() and not any((recipe / "local").iterdir())
    assert os.access(recipe / "run.sh", os.X_OK)


def test_setup_refuses_a_non_empty_directory(recipe, tmp_path):
    result = run([str(TEMPLATE / "setup.sh"), str(recipe)], tmp_path, check_rc=1)
    assert "not empty" in result.stderr


def test_recipe_without_steps_says_unimplemented_stages_clearly(recipe):
    (recipe / "steps").unlink()  # a recipe that opts out of the shared steps
    result = run(["./run.sh", "--stage", "2", "--stop_stage", "2"], recipe, check_rc=2)
    assert ("Stage 2 (tagger training): not implemented for this recipe "
            "(no local/stage2.sh or steps/stage2.sh)") in result.stderr
    result = run(["./run.sh", "--stage", "5", "--stop_stage", "5"], recipe, check_rc=2)
    assert "Stage 5 (scoring): not implemented" in result.stderr


def test_new_recipe_help_and_option_errors(recipe):
    result = run(["./run.sh", "--help"], recipe, check_rc=0)
    assert "--stop_stage" in result.stdout and "--db_root" in result.stdout
    assert "unknown option --bogus" in run(["./run.sh", "--bogus", "1"], recipe, check_rc=1).stderr
    assert "--year must be 2025 or 2026" in run(["./run.sh", "--year", "2024"], recipe, check_rc=1).stderr
    assert "true or false" in run(["./run.sh", "--force", "yes"], recipe, check_rc=1).stderr


def test_template_itself_is_runnable(tmp_path):
    # the shared step runs and stops with a clear message when stage 1 has not been run
    result = run(["./run.sh", "--stage", "3", "--stop_stage", "3", "--data_dir",
                  str(tmp_path / "nodata"), "--exp_dir", str(tmp_path / "exp")], TEMPLATE, check_rc=1)
    assert "Stage 3: separator training" in result.stderr
    assert "dataset.json: not found; run stage 1" in result.stdout + result.stderr


LOCAL_STAGE = """#!/usr/bin/env bash
set -euo pipefail
echo "stage {n} ran year=$year data_dir=$data_dir dir=$stage_dir"
echo run >> "$stage_dir/ran.txt"
"""


def test_stages_guards_done_markers_and_force(recipe):
    write_script(recipe / "local" / "stage2.sh", LOCAL_STAGE.format(n=2))
    write_script(recipe / "local" / "stage3.sh", LOCAL_STAGE.format(n=3))
    tagger_dir = recipe / "exp" / "tagger"
    separator_dir = recipe / "exp" / "separator"

    result = run(["./run.sh", "--stage", "3", "--stop_stage", "3"], recipe, check_rc=0)
    assert not tagger_dir.exists()  # stage 2 is outside the range
    assert (separator_dir / "ran.txt").read_text() == "run\n"
    assert re.search(TIMESTAMP + r" .*Stage 3: separator training: data -> exp/separator$",
                     result.stderr, re.M)
    assert (separator_dir / ".stage3.done").is_file()

    # 2026 runs get their own dirs (data_2026, *_2026) unless a tag is given
    tagger_2026 = recipe / "exp" / "tagger_2026"
    result = run(["./run.sh", "--stage", "2", "--stop_stage", "2", "--year", "2026"], recipe, check_rc=0)
    assert "stage 2 ran year=2026 data_dir=data_2026" in result.stdout
    assert "stage 2 ran year=2026" in (tagger_2026 / "logs" / "stage2.log").read_text()
    replay = (tagger_2026 / "run.sh").read_text()
    assert "./stages.sh --stage 2 --stop_stage 2 --force true" in replay and "--year 2026" in replay

    result = run(["./run.sh", "--stage", "2", "--stop_stage", "2", "--year", "2026"], recipe, check_rc=0)
    assert "skipping" in result.stderr
    assert (tagger_2026 / "ran.txt").read_text() == "run\n"  # skipped: the marker matches

    run(["./run.sh", "--stage", "2", "--stop_stage", "2", "--year", "2026", "--force", "true"],
        recipe, check_rc=0)
    assert (tagger_2026 / "ran.txt").read_text() == "run\n" * 2

    (recipe / "conf" / "tagger.yaml").write_text("epochs: 3\n")  # new settings: runs again
    run(["./run.sh", "--stage", "2", "--stop_stage", "2", "--year", "2026"], recipe, check_rc=0)
    assert (tagger_2026 / "ran.txt").read_text() == "run\n" * 3

    run(["./run.sh", "--stage", "2", "--stop_stage", "2", "--seed", "1"], recipe, check_rc=0)
    assert (tagger_dir / "ran.txt").read_text() == "run\n"  # another training seed: runs
    run(["./run.sh", "--stage", "2", "--stop_stage", "2", "--tag", "try1"], recipe, check_rc=0)
    assert (recipe / "exp" / "tagger_try1" / "ran.txt").exists()
    (recipe / "conf" / "full").mkdir()
    (recipe / "conf" / "full" / "tagger_m2dat.yaml").write_text("{}\n")
    run(["./run.sh", "--stage", "2", "--stop_stage", "2", "--tagger_config",
         "conf/full/tagger_m2dat.yaml"], recipe, check_rc=0)
    assert (recipe / "exp" / "tagger_m2dat" / "ran.txt").exists()  # named after the config


def test_stages_failing_local_stage_fails_and_leaves_no_done_marker(recipe):
    write_script(recipe / "local" / "stage2.sh", "#!/usr/bin/env bash\necho broken >&2\nexit 3\n")
    result = run(["./run.sh", "--stage", "2", "--stop_stage", "2"], recipe)
    assert result.returncode != 0
    assert "Stage 2 failed" in result.stderr
    assert not (recipe / "exp" / "tagger" / ".stage2.done").exists()
    assert "broken" in (recipe / "exp" / "tagger" / "logs" / "stage2.log").read_text()


def test_stage1_runs_prep_data_through_the_job_runner(recipe, tmp_path):
    """Stage 1 with a stand-in python that records its command line and writes dataset.json."""
    fake_python = write_script(tmp_path / "fake_python", f"""#!/usr/bin/env bash
printf '%s\\n' "$@" >> {tmp_path}/python.calls
out=""
while [ $# -gt 0 ]; do [ "$1" = --out_dir ] && out=$2; shift; done
mkdir -p "$out" && echo '{{}}' > "$out/dataset.json"
echo "prepared $out"
""")
    options = ["./run.sh", "--stage", "1", "--stop_stage", "1", "--python", str(fake_python),
               "--year", "2026", "--data_seed", "3"]
    result = run(options, recipe, check_rc=0)
    assert re.search(TIMESTAMP + r" .*Stage 1: data preparation: embedded mini soundbank -> data_2026",
                     result.stderr)
    calls = (tmp_path / "python.calls").read_text().splitlines()
    assert calls == ["-m", "s5lib.bin.prep_data", "--config", "conf/prep_data.yaml", "--year", "2026",
                     "--db_root", "", "--out_dir", "data_2026", "--seed", "3", "--nj", "2"]
    log = (recipe / "exp" / "prep_data_2026" / "logs" / "stage1.log").read_text()
    assert "prepared data_2026" in log and "# Ended (code 0)" in log
    assert "s5lib.bin.prep_data" in (recipe / "exp" / "prep_data_2026" / "run.sh").read_text()

    run(options, recipe, check_rc=0)  # same settings: skipped
    assert len((tmp_path / "python.calls").read_text().splitlines()) == len(calls)
    run(options + ["--seed", "5"], recipe, check_rc=0)  # a training seed does not touch the data
    assert len((tmp_path / "python.calls").read_text().splitlines()) == len(calls)
    run(options[:-2] + ["--data_seed", "4"], recipe, check_rc=0)  # new data seed: runs again
    assert len((tmp_path / "python.calls").read_text().splitlines()) == 2 * len(calls)


@pytest.mark.skipif(shutil.which("flock") is None, reason="flock (util-linux) is not installed")
def test_stage1_started_twice_at_once_builds_the_data_once(recipe, tmp_path):
    """Two runs on the same data dir: the second waits for the first's stage 1, then skips it."""
    started, release = tmp_path / "started", tmp_path / "release"
    fake_python = write_script(tmp_path / "fake_python", f"""#!/usr/bin/env bash
echo call >> {tmp_path}/python.calls
touch {started}
while [ ! -e {release} ]; do sleep 0.1; done
out=""
while [ $# -gt 0 ]; do [ "$1" = --out_dir ] && out=$2; shift; done
mkdir -p "$out" && echo '{{}}' > "$out/dataset.json"
""")
    options = ["./run.sh", "--stage", "1", "--stop_stage", "1", "--python", str(fake_python)]
    env = clean_env()
    with open(tmp_path / "first.err", "w") as first_err, open(tmp_path / "second.err", "w") as second_err:
        first = subprocess.Popen(options, cwd=recipe, stdout=subprocess.DEVNULL, stderr=first_err,
                                 env=env)
        try:
            for _ in range(600):
                if started.exists():
                    break
                time.sleep(0.1)
            assert started.exists(), "the first run's stage 1 never started"
            second = subprocess.Popen(options + ["--seed", "1"], cwd=recipe,
                                      stdout=subprocess.DEVNULL, stderr=second_err, env=env)
            try:
                for _ in range(600):
                    if "waiting for it" in (tmp_path / "second.err").read_text():
                        break
                    time.sleep(0.1)
                assert "another run is preparing data" in (tmp_path / "second.err").read_text()
            finally:
                release.touch()
                assert second.wait(timeout=120) == 0, (tmp_path / "second.err").read_text()
        finally:
            release.touch()
            assert first.wait(timeout=120) == 0, (tmp_path / "first.err").read_text()
    assert (tmp_path / "python.calls").read_text().splitlines() == ["call"]
    assert "Stage 1: done" in (tmp_path / "first.err").read_text()
    assert "Stage 1: already done" in (tmp_path / "second.err").read_text()


def test_budget_picks_the_configs_and_names_the_dirs(recipe):
    write_script(recipe / "local" / "stage2.sh", LOCAL_STAGE.format(n=2)
                 + 'echo "config=$tagger_config" >> "$stage_dir/ran.txt"\n')
    (recipe / "conf" / "small").mkdir()
    (recipe / "conf" / "small" / "tagger.yaml").write_text("{}\n")
    run(["./run.sh", "--stage", "2", "--stop_stage", "2", "--budget", "small"], recipe, check_rc=0)
    assert "config=conf/small/tagger.yaml" in (recipe / "exp" / "tagger_small" / "ran.txt").read_text()
    run(["./run.sh", "--stage", "2", "--stop_stage", "2", "--budget", "small", "--year", "2026"],
        recipe, check_rc=0)
    assert (recipe / "exp" / "tagger_small_2026" / "ran.txt").exists()
    result = run(["./run.sh", "--budget", "huge"], recipe, check_rc=1)
    assert "--budget must be quick, small or full" in result.stderr

    # stage 4's config: conf/<budget>/infer.yaml where the budget has one, else conf/infer.yaml
    write_script(recipe / "local" / "stage4.sh", LOCAL_STAGE.format(n=4)
                 + 'echo "config=$infer_config" >> "$stage_dir/ran.txt"\n')
    (recipe / "conf" / "full").mkdir()
    (recipe / "conf" / "full" / "infer.yaml").write_text("output_gain: 1.0\n")
    run(["./run.sh", "--stage", "4", "--stop_stage", "4", "--budget", "full"], recipe, check_rc=0)
    assert "config=conf/full/infer.yaml" in \
        (recipe / "exp" / "separator_full" / "decode_test" / "ran.txt").read_text()
    run(["./run.sh", "--stage", "4", "--stop_stage", "4", "--budget", "small"], recipe, check_rc=0)
    assert "config=conf/infer.yaml" in \
        (recipe / "exp" / "separator_small" / "decode_test" / "ran.txt").read_text()
    run(["./run.sh", "--stage", "4", "--stop_stage", "4", "--budget", "full", "--infer_config",
         "conf/infer.yaml", "--tag", "given"], recipe, check_rc=0)  # a given file wins
    assert "config=conf/infer.yaml" in \
        (recipe / "exp" / "separator_given" / "decode_test" / "ran.txt").read_text()


# stage 2 of this pair only finishes once stage 3 has started (it waits for stage 3's mark), so
# it can only succeed when the two run at the same time
WAITING_STAGE2 = """#!/usr/bin/env bash
set -euo pipefail
echo "stage 2 threads=${OMP_NUM_THREADS:-unset}" > "$stage_dir/ran.txt"
for _ in $(seq 100); do
  [ -f "$exp_dir/stage3.started" ] && { echo "stage 2 saw stage 3"; exit 0; }
  sleep 0.1
done
echo "stage 3 never started while stage 2 ran" >&2
exit 4
"""
MARKING_STAGE3 = """#!/usr/bin/env bash
set -euo pipefail
echo "stage 3 threads=${OMP_NUM_THREADS:-unset}" > "$stage_dir/ran.txt"
touch "$exp_dir/stage3.started"
echo "stage 3 marked its start"
"""


def stage_env(**extra):
    env = clean_env()
    env.pop("OMP_NUM_THREADS", None)
    env.update(extra)
    return env


def test_train_side_by_side_runs_stages_2_and_3_at_once(recipe):
    write_script(recipe / "local" / "stage2.sh", WAITING_STAGE2)
    write_script(recipe / "local" / "stage3.sh", MARKING_STAGE3)
    options = ["./run.sh", "--stage", "2", "--stop_stage", "3"]
    result = run(options + ["--train_side_by_side", "true"], recipe, env=stage_env(), check_rc=0)
    assert "Stages 2 and 3 run side by side" in result.stderr
    assert "stage 2 saw stage 3" in (recipe / "exp" / "tagger" / "logs" / "stage2.log").read_text()
    # stage 2 prints to its log while both run; the end of what it printed follows stage 3's output
    assert result.stdout.index("stage 2 saw stage 3") > result.stdout.index("stage 3 marked")
    assert "Stage 2 (ran side by side): the last lines it printed" in result.stderr
    threads = max(1, (os.cpu_count() or 2) // 2)
    for kind in ("tagger", "separator"):
        assert f"threads={threads}" in (recipe / "exp" / kind / "ran.txt").read_text()
    assert (recipe / "exp" / "tagger" / ".stage2.done").is_file()
    assert (recipe / "exp" / "separator" / ".stage3.done").is_file()
    # a thread count chosen by the caller is kept
    result = run(options + ["--train_side_by_side", "true", "--force", "true"], recipe,
                 env=stage_env(OMP_NUM_THREADS="3"), check_rc=0)
    assert "threads=3" in (recipe / "exp" / "tagger" / "ran.txt").read_text()
    # auto: side by side while stage 3 does not name $tagger_exp
    (recipe / "exp" / "stage3.started").unlink()
    result = run(options + ["--force", "true"], recipe, env=stage_env(), check_rc=0)
    assert "Stages 2 and 3 run side by side (--train_side_by_side auto" in result.stderr
    # one after the other (false; auto once stage 3 reads the tagger) stage 2 waits in vain for
    # stage 3 and fails, and stage 3 does not run
    write_script(recipe / "local" / "stage3.sh", MARKING_STAGE3 + 'echo "tagger: $tagger_exp"\n')
    for choice in ("false", "auto"):
        (recipe / "exp" / "stage3.started").unlink(missing_ok=True)
        result = run(options + ["--train_side_by_side", choice, "--force", "true"], recipe,
                     env=stage_env())
        assert result.returncode != 0 and "Stage 2 failed" in result.stderr
        assert "side by side" not in result.stderr
        assert not (recipe / "exp" / "stage3.started").exists()
    result = run(options + ["--train_side_by_side", "maybe"], recipe, env=stage_env(), check_rc=1)
    assert "--train_side_by_side must be auto, true or false" in result.stderr


def test_train_side_by_side_failures_stop_the_run(recipe):
    write_script(recipe / "local" / "stage2.sh", "#!/usr/bin/env bash\necho broken >&2\nexit 3\n")
    write_script(recipe / "local" / "stage3.sh", MARKING_STAGE3)
    write_script(recipe / "local" / "stage4.sh", LOCAL_STAGE.format(n=4))
    options = ["./run.sh", "--stage", "2", "--stop_stage", "4", "--train_side_by_side", "true"]
    result = run(options, recipe, env=stage_env())
    assert result.returncode != 0
    assert "Stage 2 failed; see exp/tagger/logs/stage2.log" in result.stderr
    assert (recipe / "exp" / "separator" / ".stage3.done").is_file()  # stage 3's work is kept
    assert not (recipe / "exp" / "tagger" / ".stage2.done").exists()
    assert not (recipe / "exp" / "separator" / "decode_test").exists()  # stage 4 did not run
    # stage 3 failing stops stage 2 (it would wait 10 s for a mark that never comes)
    write_script(recipe / "local" / "stage2.sh", WAITING_STAGE2)
    write_script(recipe / "local" / "stage3.sh", "#!/usr/bin/env bash\nexit 5\n")
    (recipe / "exp" / "stage3.started").unlink()
    result = run(options + ["--force", "true"], recipe, env=stage_env())
    assert result.returncode != 0 and "Stage 3 failed" in result.stderr
    assert not (recipe / "exp" / "tagger" / ".stage2.done").exists()
    assert "stage 3 never started" not in (recipe / "exp" / "tagger" / "logs" / "stage2.log").read_text()
