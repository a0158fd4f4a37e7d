"""Write a recipe's generated RESULTS.md from the scoring summaries (stage 5).

Usage::

    python -m s5lib.bin.make_results --recipe_dir egs/baseline --out egs/baseline/RESULTS.md \\
        --summaries exp/score_a/summary.json exp/score_a_oracle/summary.json exp/anchor_mixture

Each ``--summaries`` entry is a ``summary.json`` written by ``python -m s5lib.bin.score`` or a
folder searched for them. Summaries with the same tag (experiment name) form one table, one
row per label mode (estimated / oracle labels); another recipe's summaries (e.g. egs/baseline's
rows next to a system's) are titled ``<recipe>: <tag>``. The page starts with an environment block
(date, versions, git hash, machine) and is never to be edited by hand.

Beside the page, ``RESULTS.json`` archives every run it shows (summary, command, diagnostics).
Rows of the previous page whose summary.json is not among ``--summaries`` (a fresh clone, exp
dirs removed or on another machine) are kept from that archive and named at the top of the
page; ``--forget_missing`` drops them. A page older than its archive gives its rows from its
tables (values as printed, diagnostics as text); a section that does not read as a table of
this tool stays as it was written.
"""
import argparse
import os
import sys

from s5lib.results import (archive_path, find_summaries, legacy_records, load_summary,
                           read_archive, run_key, write_results_md)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summaries", nargs="+", required=True,
                        help="summary.json files or folders holding them")
    parser.add_argument("--out", required=True, help="RESULTS.md to write")
    parser.add_argument("--recipe_dir", default=None,
                        help="recipe folder (default: the folder of --out)")
    parser.add_argument("--title", default=None, help="page title (default: recipe name)")
    parser.add_argument("--forget_missing", action="store_true",
                        help="show only the runs of --summaries (default: also keep the previous "
                             "page's runs whose summary.json is gone, from RESULTS.json)")
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
    kept = []
    if not args.forget_missing:
        archive = archive_path(args.out)
        try:
            records = (read_archive(archive) if os.path.isfile(archive)
                       else legacy_records(args.out, this_recipe))
        except ValueError as err:
            print(f"ERROR: {err}", file=sys.stderr)
            return 1
        fresh = {run_key(name, summary) for name, summary, _ in experiments}
        fresh_names = {name for name, _, _ in experiments}
        kept = [r for r in records if (run_key(r["name"], r["summary"]) not in fresh
                                       if "summary" in r else r["name"] not in fresh_names)]
    write_results_md(recipe_dir, experiments, args.out, title=args.title, summary_paths=paths,
                     kept=kept)
    print(f"Wrote {args.out} ({len(experiments)} scoring run(s)"
          + (f", {len(kept)} kept from the previous page: not among --summaries"
             if kept else "") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
