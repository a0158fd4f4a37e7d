"""A listening and analysis page of scored experiments: one self-contained HTML file.

Usage::

    python -m s5lib.bin.report --score_dir exp/separator/decode_test/scores/estimated \\
        --out exp/separator/decode_test/report.html [--n 4] [--max_mb 20] [--seed 0]
    python -m s5lib.bin.report --score_dir A/scores/estimated B/scores/estimated --out cmp.html

``--score_dir``: folders written by ``python -m s5lib.bin.score`` (summary.json, per_mixture.csv,
per_source.csv, breakdowns.json). With several, the page compares them side by side on the same
mixtures (chosen from the first; one row per experiment), and their test sets must hold the
same mixtures. The page holds the summary table (with the anchor rows found beside the first
score dir), the diagnostics of ``breakdowns.json`` (metric per number of targets / interferers /
duplicates, false alarms, the label-free CASA-SDRi), per-class bars of precision, recall and
SDRi of true positives, the confusion matrix, and for a choice of mixtures -- the ``--n`` worst,
the ``--n`` best and ``--n`` drawn at random (``--seed``) by the first experiment's score -- the
mixture (channel 0), every estimate and every reference as audio players with spectrograms,
their labels, TP / FP / FN and SNRi.

Audio is embedded (16-bit WAV at ``--audio_rate``, 16 kHz by default; base64) so the file opens
from any file browser without a server. ``--max_mb`` bounds the page: when the chosen mixtures
would not fit, fewer are shown (the page says how many of how many). Paths in a summary are
taken relative to the current folder or to the recipe folder above the score dir; the file
names of the sources never leave their folders.

Look at a page as a person would (Debian's ``chromium`` package)::

    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,2400 \\
        --screenshot=report.png file://$PWD/report.html
"""
import argparse
import base64
import csv
import html
import io
import json
import os
import sys
import time
import wave

import numpy as np

from s5lib.audio import AudioError, read_audio
from s5lib.constants import SAMPLE_RATE

CATEGORIES = ("worst", "best", "random")
SPEC_FFT, SPEC_HOP, SPEC_ROWS, SPEC_COLUMNS = 512, 256, 96, 320


class ReportError(ValueError):
    """A score dir or a file it names is missing or malformed."""


# ----------------------------------------------------------------------------- reading

def _recipe_root(score_dir):
    """The folder above the ``exp`` folder that holds ``score_dir`` (None when there is none)."""
    path = os.path.abspath(score_dir)
    while True:
        parent = os.path.dirname(path)
        if parent == path:
            return None
        if os.path.basename(path) == "exp":
            return parent
        path = parent


def resolve_dir(path, score_dir):
    """A folder named in a summary: as given (absolute or relative to the current folder), or
    relative to the recipe folder of ``score_dir``; None when it is nowhere."""
    if not path:
        return None
    candidates = [path]
    root = _recipe_root(score_dir)
    if root and not os.path.isabs(path):
        candidates.append(os.path.join(root, path))
    return next((os.path.abspath(c) for c in candidates if os.path.isdir(c)), None)


def _inside(folder, name):
    """``folder/name`` for a plain file name; None for a name that would leave the folder."""
    if not name or os.path.basename(name) != name or name in (".", ".."):
        return None
    return os.path.join(folder, name)


def _read_csv(path):
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError as err:
        raise ReportError(f"{path}: cannot read ({err})") from None


def _float(text):
    try:
        return None if text in (None, "") else float(text)
    except ValueError:
        return None


class Experiment:
    """One score dir: its summary, per-mixture rows, sources, breakdowns and audio folders."""

    def __init__(self, score_dir):
        self.score_dir = score_dir
        summary_path = os.path.join(score_dir, "summary.json")
        if not os.path.isfile(summary_path):
            raise ReportError(f"{score_dir}: no summary.json (not a folder written by "
                              f"python -m s5lib.bin.score)")
        try:
            with open(summary_path) as f:
                self.summary = json.load(f)
            self.metrics = self.summary["metrics"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ReportError(f"{summary_path}: not a scoring summary ({err})") from None
        self.metric_name = self.summary.get("metric_name") or self.metrics.get("metric_name")
        what = (self.label_mode if self.summary.get("anchor")
                else f"{self.label_mode} labels")
        self.name = (f"{self.summary.get('recipe') or ''} {self.summary.get('tag') or ''} "
                     f"({what})").strip()
        self.mixtures = {}
        for row in _read_csv(os.path.join(score_dir, "per_mixture.csv")):
            self.mixtures[row["mixture"]] = row
        self.sources = {}
        for row in _read_csv(os.path.join(score_dir, "per_source.csv")):
            self.sources.setdefault(row["mixture"], []).append(row)
        path = os.path.join(score_dir, "breakdowns.json")
        self.breakdowns = None
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    self.breakdowns = json.load(f)
            except (OSError, ValueError) as err:
                raise ReportError(f"{path}: cannot read ({err})") from None
        self.est_dir = resolve_dir(self.summary.get("est_dir"), score_dir)
        self.ref_dir = resolve_dir(self.summary.get("ref_dir"), score_dir)

    @property
    def label_mode(self):
        anchor = self.summary.get("anchor")
        return f"anchor: {anchor}" if anchor else (self.summary.get("label_mode") or "estimated")

    def score(self, mixture):
        return _float(self.mixtures.get(mixture, {}).get("score"))


def anchor_experiments(score_dir):
    """The anchor rows (``anchor_*`` folders) beside a score dir, as experiments."""
    parent = os.path.dirname(os.path.abspath(score_dir))
    out = []
    for name in sorted(os.listdir(parent)):
        folder = os.path.join(parent, name)
        if name.startswith("anchor_") and os.path.isfile(os.path.join(folder, "summary.json")):
            out.append(Experiment(folder))
    return out


# ----------------------------------------------------------------------------- choosing mixtures

def choose_mixtures(experiment, n, seed):
    """[(category, mixture)]: the ``n`` worst and ``n`` best scored mixtures of the experiment
    and ``n`` others at random (``seed``); fewer when the test set is small."""
    scored = sorted(((s, m) for m in experiment.mixtures if (s := experiment.score(m)) is not None),
                    key=lambda item: (item[0], item[1]))
    order = [m for _, m in scored]
    worst = order[:n]
    best = [m for m in reversed(order) if m not in worst][:n]
    rest = sorted(set(experiment.mixtures) - set(worst) - set(best))
    rng = np.random.default_rng(seed)
    random = sorted(rng.choice(rest, size=min(n, len(rest)), replace=False).tolist()) if rest else []
    return ([("worst", m) for m in worst] + [("best", m) for m in best]
            + [("random", m) for m in random])


# ----------------------------------------------------------------------------- audio + images

def _resample(signal, rate_in, rate_out):
    if rate_in == rate_out:
        return signal
    from math import gcd
    from scipy.signal import resample_poly
    g = gcd(rate_in, rate_out)
    return resample_poly(signal, rate_out // g, rate_in // g).astype(np.float32)


def wav_bytes(signal, rate):
    """16-bit mono WAV of ``signal`` (clipped to [-1, 1])."""
    pcm = (np.clip(signal, -1.0, 1.0) * 32767.0).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def stft_power(signal):
    """(frames, bins) power of the Hann-windowed STFT (SPEC_FFT / SPEC_HOP; a short signal is
    zero-padded to one frame)."""
    n_frames = max(1, 1 + (len(signal) - SPEC_FFT) // SPEC_HOP)
    index = np.arange(SPEC_FFT)[None, :] + SPEC_HOP * np.arange(n_frames)[:, None]
    padded = np.pad(signal, (0, max(0, index.max() + 1 - len(signal))))
    return np.abs(np.fft.rfft(padded[index] * np.hanning(SPEC_FFT)[None, :], axis=1)) ** 2


def spectrogram_png(signal, top_db):
    """A log-magnitude spectrogram (dB, 80 dB range under ``top_db``) as PNG bytes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    power = stft_power(signal)
    bins = power.shape[1] - 1
    edges = np.linspace(0, bins, SPEC_ROWS + 1).astype(int)
    rows = np.stack([power[:, a:max(b, a + 1)].mean(1) for a, b in zip(edges[:-1], edges[1:])])
    if rows.shape[1] > SPEC_COLUMNS:  # average whole frames into at most SPEC_COLUMNS columns
        edges = np.linspace(0, rows.shape[1], SPEC_COLUMNS + 1).astype(int)
        rows = np.stack([rows[:, a:max(b, a + 1)].mean(1) for a, b in zip(edges[:-1], edges[1:])],
                        axis=1)
    db = 10 * np.log10(rows + 1e-12)
    image = np.clip((db - (top_db - 80.0)) / 80.0, 0.0, 1.0)
    buffer = io.BytesIO()
    colours = (plt.get_cmap("magma")(image[::-1])[..., :3] * 255).astype(np.uint8)  # RGB: smaller
    plt.imsave(buffer, colours, format="png")
    return buffer.getvalue()


def top_db_of(signal):
    """The loudest STFT bin of ``signal`` in dB: the top of its spectrogram's colour scale."""
    return float(10 * np.log10(stft_power(signal).max() + 1e-12))


def _b64(data):
    return base64.b64encode(data).decode("ascii")


class Media:
    """Audio players and spectrograms of one page, embedded; collects the files it could not
    read (listed on the page)."""

    def __init__(self, audio_rate):
        self.audio_rate = int(audio_rate)
        self.problems = []

    def read(self, path, channels=None):
        try:
            signal = read_audio(path, sample_rate=SAMPLE_RATE, channels=channels)
        except (AudioError, OSError, ValueError) as err:
            self.problems.append(str(err))
            return None
        signal = signal[0] if signal.ndim == 2 else signal
        return np.asarray(signal, dtype=np.float32)

    def block(self, title, signal, top_db, note=""):
        if signal is None:
            return (f'<div class="src missing"><div class="t">{html.escape(title)}</div>'
                    f'<div class="n">audio not found</div></div>')
        audio = _b64(wav_bytes(_resample(signal, SAMPLE_RATE, self.audio_rate), self.audio_rate))
        image = _b64(spectrogram_png(signal, top_db))
        return (f'<div class="src"><div class="t">{html.escape(title)}</div>'
                f'<img alt="spectrogram of {html.escape(title)}" src="data:image/png;base64,{image}">'
                f'<audio controls preload="none" src="data:audio/wav;base64,{audio}"></audio>'
                f'<div class="n">{note}</div></div>')


# ----------------------------------------------------------------------------- page parts

def _fmt(value, digits=2):
    return "" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


SUMMARY_KEYS = ("CA-SDRi", "CAPI-SDRi", "label_accuracy", "accuracy_mixture", "accuracy_source",
                "SDRi_tp", "SDR_tp", "SI-SDR_tp", "n_mixtures", "n_skipped", "tp", "fp", "fn")


def summary_table(experiments):
    keys = [k for k in SUMMARY_KEYS if any(e.metrics.get(k) is not None for e in experiments)]
    extra = any(e.breakdowns for e in experiments)
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    head += "<th>CASA-SDRi (not official)</th>" if extra else ""
    rows = []
    for e in experiments:
        cells = "".join(f"<td>{_fmt(e.metrics.get(k))}</td>" for k in keys)
        if extra:
            casa = (e.breakdowns or {}).get("casa", {})
            cells += f"<td>{_fmt(casa.get('CASA-SDRi'))}</td>"
        rows.append(f"<tr><th>{html.escape(e.name)}</th>{cells}</tr>")
    return f'<table><tr><th>experiment</th>{head}</tr>{"".join(rows)}</table>'


def breakdown_tables(experiments):
    missing = [e for e in experiments if not e.breakdowns]
    experiments = [e for e in experiments if e.breakdowns]
    parts = []
    if missing:
        names = ", ".join(html.escape(e.name) for e in missing)
        parts.append(f'<p class="note">No breakdowns.json (scored before the diagnostics '
                     f'existed; score again to get them): {names}.</p>')
    if not experiments:
        return "".join(parts)
    for title, key in (("number of targets", "by_n_targets"),
                       ("number of interferers", "by_n_interferers"),
                       ("same-class duplicates", "by_duplicates")):
        keys = sorted({k for e in experiments for k in ((e.breakdowns or {}).get(key) or {})})
        if not keys:
            continue
        head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
        rows = []
        for e in experiments:
            group = (e.breakdowns or {}).get(key) or {}
            cells = []
            for k in keys:
                entry = group.get(k)
                cells.append("<td></td>" if entry is None else
                             f"<td>{_fmt(entry.get(e.metric_name)) or 'no score'}<br><small>acc "
                             f"{_fmt(entry.get('label_accuracy'), 0)} %, n={entry['n_mixtures']}"
                             f"</small></td>")
            rows.append(f"<tr><th>{html.escape(e.name)}</th>{''.join(cells)}</tr>")
        parts.append(f"<h3>By {title}</h3><table><tr><th>experiment</th>{head}</tr>"
                     f"{''.join(rows)}</table>")
    rows = []
    for e in experiments:
        b = e.breakdowns or {}
        alarm, casa = b.get("false_alarm") or {}, b.get("casa") or {}
        rate = ("no target-free mixture" if alarm.get("rate") is None else
                f"{_fmt(alarm['rate'], 1)} ({alarm['n_with_an_estimate']} of "
                f"{alarm['n_empty_mixtures']})")
        rows.append(f"<tr><th>{html.escape(e.name)}</th><td>{rate}</td>"
                    f"<td>{_fmt(casa.get('CASA-SDRi'))}</td>"
                    f"<td>{casa.get('label_swaps', '')} of {casa.get('n_pairs', '')}</td></tr>")
    parts.append("<h3>False alarms and label-free matching</h3><table><tr><th>experiment</th>"
                 "<th>false alarms on empty mixtures, %</th><th>CASA-SDRi</th>"
                 "<th>matched pairs with another label</th></tr>" + "".join(rows) + "</table>")
    return "".join(parts)


def bars_svg(rows, key, scale, width=220, unit=""):
    """Horizontal bars of ``rows[i][key]`` (one per class) as inline SVG."""
    height = 14 * len(rows) + 4
    parts = [f'<svg class="bars" width="{width + 60}" height="{height}" role="img">']
    for i, row in enumerate(rows):
        value = row.get(key)
        y = 2 + 14 * i
        if value is not None:
            length = max(0.0, min(1.0, value / scale)) * width
            parts.append(f'<rect x="0" y="{y}" width="{length:.1f}" height="11" fill="#3b6ea8"/>')
            parts.append(f'<text x="{length + 3:.1f}" y="{y + 10}" font-size="10">'
                         f'{value:.1f}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def per_class_section(experiment):
    rows = (experiment.breakdowns or {}).get("per_class")
    if not rows:
        return ""
    sdri_max = max([r["sdri_tp"] for r in rows if r.get("sdri_tp") is not None] + [1.0])
    labels = "".join(f'<div class="lab">{html.escape(r["label"])} '
                     f'<small>({r["tp"]}/{r["fp"]}/{r["fn"]})</small></div>' for r in rows)
    return (f'<h3>Per class: {html.escape(experiment.name)}</h3><div class="classes">'
            f'<div><div class="hd">class (TP/FP/FN)</div>{labels}</div>'
            f'<div><div class="hd">precision</div>{bars_svg(rows, "precision", 100, unit=" %")}</div>'
            f'<div><div class="hd">recall</div>{bars_svg(rows, "recall", 100, unit=" %")}</div>'
            f'<div><div class="hd">SDRi of TP (dB)</div>{bars_svg(rows, "sdri_tp", sdri_max)}</div>'
            f'</div>')


def confusion_section(experiment):
    confusion = (experiment.breakdowns or {}).get("confusion")
    if not confusion:
        return ""
    labels, counts = confusion["labels"], np.asarray(confusion["counts"])
    used = [i for i in range(len(labels)) if counts[i].sum() or counts[:, i].sum()]
    if not used:
        return ""
    peak = max(1, counts.max())
    head = "".join(f'<th class="v"><span>{html.escape(labels[j])}</span></th>' for j in used)
    rows = []
    for i in used:
        cells = []
        for j in used:
            value = int(counts[i, j])
            shade = 0.85 * value / peak
            colour = "#2e7d32" if i == j else "#c62828"
            cells.append(f'<td style="background:rgba({_rgb(colour)},{shade:.2f})">'
                         f'{value or ""}</td>')
        rows.append(f"<tr><th>{html.escape(labels[i])}</th>{''.join(cells)}</tr>")
    return (f"<h3>Confusions: {html.escape(experiment.name)}</h3><p>Rows: the reference's class "
            f"(or (none): an estimate matched to no reference); columns: the label of the "
            f"estimate matched to it by SNR whatever its label (or (none): missed).</p>"
            f'<table class="cm"><tr><th></th>{head}</tr>{"".join(rows)}</table>')


def _rgb(colour):
    return ",".join(str(int(colour[i:i + 2], 16)) for i in (1, 3, 5))


def mixture_section(category, mixture, experiments, media):
    first = experiments[0]
    row = first.mixtures.get(mixture, {})
    ref_labels = [x for x in (row.get("ref_labels") or "").split(";") if x]
    mix_signal, references = None, {}
    ref_dir = first.ref_dir
    if ref_dir:
        path = _inside(os.path.join(ref_dir, "soundscape"), mixture + ".wav")
        if path:
            mix_signal = media.read(path)
    top_db = top_db_of(mix_signal) if mix_signal is not None else 0.0
    blocks = [media.block("mixture (channel 0)", mix_signal, top_db)]
    for source in first.sources.get(mixture, []):
        name = source.get("ref_name")
        if name and name not in references and ref_dir:
            path = _inside(os.path.join(ref_dir, "oracle_target"), name)
            references[name] = media.read(path, channels=1) if path else None
            blocks.append(media.block(f"reference: {source['label']}", references[name], top_db))
    lines = [f'<section class="mix"><h3>{html.escape(mixture)} <small>{category}; '
             f'references: {html.escape(", ".join(ref_labels) or "none")}</small></h3>'
             f'<div class="row">{"".join(blocks)}</div>']
    for e in experiments:
        score = e.score(mixture)
        blocks = []
        for source in e.sources.get(mixture, []):
            kind, label = source.get("kind", ""), source.get("label", "")
            note = html.escape(kind)
            snri = _float(source.get("snri"))
            if kind == "TP":
                note += f", SNRi {snri:.2f} dB" if snri is not None else ""
            if kind == "FN":
                blocks.append(f'<div class="src fn"><div class="t">{html.escape(label)}</div>'
                              f'<div class="n">FN: no estimate</div></div>')
                continue
            signal = None
            name = source.get("est_name")
            if e.est_dir and name:
                path = _inside(e.est_dir, name)
                signal = media.read(path, channels=1) if path else None
            blocks.append(media.block(f"estimate: {label}", signal, top_db, note))
        lines.append(f'<div class="exp"><div class="en">{html.escape(e.name)}: '
                     f'{e.metric_name} {_fmt(score)}</div><div class="row">{"".join(blocks)}'
                     f'</div></div>')
    lines.append("</section>")
    return "".join(lines)


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1500px}
table{border-collapse:collapse;margin:.5em 0 1em}
td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px;text-align:right}
th{background:#f3f3f3;text-align:left}
.cm td{min-width:1.6em;text-align:center}.cm th.v{height:9em;vertical-align:bottom}
.cm th.v span{writing-mode:vertical-rl;transform:rotate(180deg)}
.classes{display:flex;gap:1em}.lab,.hd{font-size:12px;height:14px}.hd{font-weight:bold;height:18px}
.mix{border-top:2px solid #999;margin-top:1.2em;padding-top:.3em}
.row{display:flex;flex-wrap:wrap;gap:10px}
.src{width:260px;font-size:12px}.src img{width:260px;height:110px;display:block}
.src audio{width:260px;height:28px}.src .t{font-weight:bold}.fn{color:#c62828}
.exp{margin:.5em 0 .5em 1em}.en{font-weight:bold;margin:.3em 0}.note{color:#555}
"""


def build_report(score_dirs, out, n=4, seed=0, max_mb=20.0, audio_rate=16000):
    """Write the page; returns a dict of what it holds (mixtures shown, bytes, seconds)."""
    start = time.time()
    experiments = [Experiment(d) for d in score_dirs]
    first = experiments[0]
    for e in experiments[1:]:
        if set(e.mixtures) != set(first.mixtures):
            raise ReportError(f"{e.score_dir}: its test set differs from {first.score_dir}'s "
                              f"({len(e.mixtures)} vs {len(first.mixtures)} mixtures, "
                              f"{len(set(e.mixtures) ^ set(first.mixtures))} not in both)")
    chosen = choose_mixtures(first, n, seed)
    # taken round-robin (worst, best, random, worst, ...) so that a tight budget keeps some of
    # each; a mixture whose section would pass the size bound is left out
    by_category = {k: [c for c in chosen if c[0] == k] for k in CATEGORIES}
    queue = [by_category[k][rank] for rank in range(n) for k in CATEGORIES
             if rank < len(by_category[k])]
    media = Media(audio_rate)
    anchors = anchor_experiments(first.score_dir)
    budget = max_mb * 2 ** 20 - 300_000  # the tables and the page around the sections
    sections, used = {}, 0
    for category, mixture in queue:
        section = mixture_section(category, mixture, experiments, media)
        if used + len(section) > budget:
            continue
        sections[(category, mixture)] = section
        used += len(section)
    kept = [c for c in chosen if c in sections]
    sections = [sections[c] for c in kept]
    title = " vs ".join(e.name for e in experiments)
    counts = ", ".join(f"{sum(c == k for c, _ in kept)} {k}" for k in CATEGORIES)
    note = f"{len(kept)} of {len(first.mixtures)} mixtures shown ({counts}; --n {n}, --seed {seed})"
    if len(kept) < len(chosen):
        note += (f"; {len(chosen) - len(kept)} more were chosen but left out to stay under "
                 f"{max_mb:g} MB")
    problems = ""
    if media.problems:
        listed = "".join(f"<li>{html.escape(p)}</li>" for p in media.problems[:20])
        problems = f'<h2>Audio that could not be read</h2><ul class="note">{listed}</ul>'
    commands = "".join(f"<li><code>{html.escape(e.summary.get('command') or '')}</code></li>"
                       for e in experiments)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>"
            f'<p class="note">Year {first.summary.get("year")}; {len(first.mixtures)} mixtures; '
            f'written {time.strftime("%Y-%m-%d %H:%M")} by python -m s5lib.bin.report.</p>'
            f"<h2>Summary</h2>{summary_table(experiments + anchors)}"
            f"<h2>Diagnostics</h2>{breakdown_tables(experiments)}"
            + "".join(per_class_section(e) for e in experiments)
            + "".join(confusion_section(e) for e in experiments)
            + f'<h2>Listening</h2><p class="note">{html.escape(note)}. Spectrograms share the '
              f'mixture\'s dB scale (80 dB range); audio at {audio_rate} Hz.</p>'
            + "".join(sections) + problems
            + f'<h2>Commands</h2><ul class="note">{commands}</ul></body></html>')
    os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, out)
    return {"out": out, "mixtures_shown": len(kept), "mixtures_chosen": len(chosen),
            "n_mixtures": len(first.mixtures), "bytes": len(page.encode("utf-8")),
            "seconds": time.time() - start, "problems": list(media.problems)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--score_dir", nargs="+", required=True,
                        help="score folders (python -m s5lib.bin.score --out_dir); several: "
                             "side by side on the same mixtures")
    parser.add_argument("--out", required=True, help="the HTML file to write")
    parser.add_argument("--n", type=int, default=4, help="worst / best / random mixtures each")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random choice")
    parser.add_argument("--max_mb", type=float, default=20.0, help="size bound of the page")
    parser.add_argument("--audio_rate", type=int, default=16000, help="embedded audio rate (Hz)")
    args = parser.parse_args(argv)
    if args.n < 0 or args.max_mb <= 0 or args.audio_rate < 1000:
        print("ERROR: --n must be >= 0, --max_mb > 0 and --audio_rate >= 1000", file=sys.stderr)
        return 1
    try:
        info = build_report(args.score_dir, args.out, n=args.n, seed=args.seed,
                            max_mb=args.max_mb, audio_rate=args.audio_rate)
    except ReportError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
    print(f"Wrote {info['out']}: {info['mixtures_shown']} of {info['n_mixtures']} mixtures "
          f"shown, {info['bytes'] / 2 ** 20:.1f} MB, {info['seconds']:.1f} s")
    for problem in info["problems"][:5]:
        print(f"WARNING: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
