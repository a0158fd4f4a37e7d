"""Side-by-side table of several recipes' (or experiments') scores, as markdown and CSV.

Usage::

    python -m s5lib.bin.compare --results egs/*/exp/**/summary.json --out cmp.md --csv cmp.csv
    python -m s5lib.bin.compare --results egs/baseline egs/cpjku      # folders are searched
    python -m s5lib.bin.compare --seed_table --results egs/cpjku/exp egs/baseline/exp  # ablations
    python -m s5lib.bin.compare --seed_table --metric label_accuracy --results egs/redux/exp
    python -m s5lib.bin.compare --strategy_table --results egs/redux/exp   # REDUX's case counts
    python -m s5lib.bin.compare --results A/scores/estimated B/scores/estimated --report cmp.html

One row per scoring run (recipe, experiment, year, label mode), one column per measure
(CA-SDRi / CAPI-SDRi, accuracies, SDRi/SDR/SI-SDR over TP sources, mixtures, skipped).
Columns no run has are left out of the markdown; the CSV keeps every column at full
precision. Without ``--out`` the markdown goes to stdout.
"""
import argparse
import os
import sys

from s5lib.results import comparison_rows, find_summaries, load_summary, plot_refinement_curves, \
    refinement_curves, rows_to_markdown, seed_table, strategy_table, write_csv

SORT_KEYS = ("none", "recipe", "score")


def write_markdown(text, out, what=""):
    """The table to ``out`` (its folder made), or to stdout without ``out``."""
    if not out:
        print(text)
        return
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text + "\n")
    print(f"Wrote {out}{what}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", nargs="+", required=True,
                        help="summary.json files, or folders searched for them")
    parser.add_argument("--out", default=None, help="markdown file to write (default: stdout)")
    parser.add_argument("--csv", default=None, help="CSV file to write")
    parser.add_argument("--sort", default="none", choices=SORT_KEYS,
                        help="row order: as given, by recipe/experiment, or by main score")
    parser.add_argument("--seed_table", action="store_true",
                        help="one table of experiments (seed tokens removed) x label sources, "
                             "each cell mean ± std (seeds) of the main measure; refinement steps "
                             "as rows (an ablation table)")
    parser.add_argument("--plot", default=None,
                        help="with --seed_table: a PNG of the measure after every refinement step "
                             "(the decodes that have steps), one panel per experiment")
    parser.add_argument("--metric", default=None,
                        help="with --seed_table: the measure of the cells (a key of the summaries' "
                             "metrics, e.g. label_accuracy; default: CA-SDRi / CAPI-SDRi)")
    parser.add_argument("--strategy_table", action="store_true",
                        help="the per-case counts of the decodes that ran REDUX's strategy "
                             "(procedure: redux), mean over seeds")
    parser.add_argument("--report", default=None,
                        help="also write the listening and analysis page of the runs side by "
                             "side on the same mixtures (python -m s5lib.bin.report; anchors "
                             "are left out of the rows): the HTML file")
    parser.add_argument("--report_mixtures", type=int, default=3,
                        help="with --report: worst / best / random mixtures each")
    args = parser.parse_args(argv)
    try:
        paths = find_summaries(args.results)
        summaries = [load_summary(p) for p in paths]
    except ValueError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    if args.report:
        from s5lib.bin.report import ReportError, build_report
        score_dirs = [os.path.dirname(os.path.abspath(p)) for p, s in zip(paths, summaries)
                      if not s.get("anchor")]
        if not score_dirs:
            print("ERROR: --report needs runs with estimates (all given runs are anchors)",
                  file=sys.stderr)
            return 1
        try:
            info = build_report(score_dirs, args.report, n=args.report_mixtures)
        except ReportError as err:
            print(f"ERROR: {err}", file=sys.stderr)
            return 1
        print(f"Wrote {args.report} ({len(score_dirs)} runs, {info['mixtures_shown']} mixtures)")
    if args.strategy_table:
        write_markdown(strategy_table(list(zip(paths, summaries)))
                       or "No decode ran the strategy (procedure: redux).", args.out)
        return 0
    if args.metric and not args.seed_table:
        print("ERROR: --metric goes with --seed_table", file=sys.stderr)
        return 1
    if args.seed_table:
        if args.metric and not any(args.metric in s["metrics"] for s in summaries):
            print(f"ERROR: no summary has the measure {args.metric!r}", file=sys.stderr)
            return 1
        text = seed_table(summaries, args.metric)
        if args.plot:
            if plot_refinement_curves(refinement_curves(summaries), args.plot):
                print(f"Wrote {args.plot}")
            else:
                print(f"no decode with refinement steps: {args.plot} not written")
        write_markdown(text, args.out)
        return 0
    rows = comparison_rows(summaries)
    if args.sort == "recipe":
        rows.sort(key=lambda r: (r["recipe"], r["experiment"], r["labels"]))
    elif args.sort == "score":
        def main_score(row):
            value = row.get("CAPI-SDRi") if row.get("CAPI-SDRi") is not None else row.get("CA-SDRi")
            return -(value if value is not None else float("-inf"))
        rows.sort(key=main_score)
    years = sorted({r["year"] for r in rows if r["year"] is not None})
    text = rows_to_markdown(rows)
    if len(years) > 1:
        text += ("\n\nNote: rows of different years use different test sets and measures "
                 "(CA-SDRi 2025, CAPI-SDRi 2026); compare within a year.")
    write_markdown(text, args.out, f" ({len(rows)} row(s))")
    if args.csv:
        write_csv(rows, args.csv)
        print(f"Wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
