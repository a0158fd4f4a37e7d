"""Write a recipe's generated RESULTS.md from the scoring summaries (stage 5).

Usage::

    python -m s5lib.bin.make_results --recipe_dir egs/baseline --out egs/baseline/RESULTS.md \\
        --summaries exp/score_a/summary.json exp/score_a_oracle/summary.json exp/anchor_mixture

Each ``--summaries`` entry is a ``summary.json`` written by ``python -m s5lib.bin.score`` or a
folder searched for them. Summaries with the same tag (experiment name) form one table, one
row per label mode (estimated / oracle labels); another recipe's summaries (e.g. egs/baseline's
rows next to a system's) are titled ``<recipe>: <tag>``. The page starts with an environment block
(date, versions, git hash, machine) and is never to be edited by hand.
"""
import argparse
import os
import sys

from s5lib.results import find_summaries, load_summary, write_results_md


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summaries", nargs="+", required=True,
                        help="summary.json files or folders holding them")
    parser.add_argument("--out", required=True, help="RESULTS.md to write")
    parser.add_argument("--recipe_dir", default=None,
                        help="recipe folder (default: the folder of --out)")
    parser.add_argument("--title", default=None, help="page title (default: recipe name)")
    args = parser.parse_args(argv)
    recipe_dir = args.recipe_dir or os.path.dirname(os.path.abspath(args.out))
    try:
        paths = find_summaries(args.summaries)
        summaries = [load_summary(p) for p in paths]
    except ValueError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    this_recipe = os.path.basename(os.path.normpath(os.path.abspath(recipe_dir)))
    experiments = []
    for path, summary in zip(paths, summaries):
        name = summary.get("tag") or os.path.basename(os.path.dirname(os.path.abspath(path)))
        other = summary.get("recipe")
        if other and other != this_recipe:  # another recipe's rows (two recipes name dirs alike)
            name = f"{other}: {name}"
        experiments.append((name, summary, summary.get("command", "")))
    write_results_md(recipe_dir, experiments, args.out, title=args.title, summary_paths=paths)
    print(f"Wrote {args.out} ({len(experiments)} scoring run(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
