#!/usr/bin/env bash
# Create a new recipe that shares everything with egs/TEMPLATE.
#
# Usage: egs/TEMPLATE/setup.sh <new_recipe_dir>        (e.g. egs/TEMPLATE/setup.sh egs/my_system)
#
# The new directory gets:
#   path.sh cmd.sh stages.sh   symlinks to the template's (shared, never forked)
#   steps                      symlink to the template's shared stage 2-5 steps
#   utils                      symlink to the repository's utils/
#   conf/                      a copy of the template's configs, to edit for the new system
#   local/                     empty; put local/stageN.sh here for what only this system does
#   run.sh                     thin: the system's choices, then the command-line options
set -euo pipefail

if [ $# -ne 1 ] || [ "$1" = --help ] || [ "$1" = -h ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  [ $# -eq 1 ] && exit 0
  exit 1
fi

template_dir=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
repo_root=$(cd "$template_dir/../.." && pwd)
new_dir=$1

if [ -e "$new_dir" ] && [ ! -d "$new_dir" ]; then
  echo "$0: $new_dir exists and is not a directory" >&2
  exit 1
fi
if [ -d "$new_dir" ] && [ -n "$(ls -A "$new_dir")" ]; then
  echo "$0: $new_dir already exists and is not empty; refusing to touch it" >&2
  exit 1
fi
mkdir -p "$new_dir"
new_dir=$(cd "$new_dir" && pwd)
if [ "$new_dir" = "$template_dir" ]; then
  echo "$0: the new recipe cannot be the template itself" >&2
  exit 1
fi

relative_to_new() {  # path of $1 as seen from the new recipe directory
  realpath -m --relative-to="$new_dir" "$1"
}

for shared in path.sh cmd.sh stages.sh steps; do
  ln -s "$(relative_to_new "$template_dir/$shared")" "$new_dir/$shared"
done
ln -s "$(relative_to_new "$repo_root/utils")" "$new_dir/utils"
cp -r "$template_dir/conf" "$new_dir/conf"
mkdir -p "$new_dir/local"

name=$(basename "$new_dir")
cat > "$new_dir/run.sh" <<RUN
#!/usr/bin/env bash
# Recipe $name: <describe the system in one line>.
# The stages are shared (./stages.sh --help); this file only holds the system's choices.
# Options given on the command line come last and override them.
set -euo pipefail

exec ./stages.sh \\
  --data_config conf/prep_data.yaml \\
  --score_config conf/score.yaml \\
  "\$@"
RUN
chmod +x "$new_dir/run.sh"

echo "Created recipe $new_dir: edit its run.sh and conf/, add local/stageN.sh where needed."
