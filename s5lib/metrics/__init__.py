"""S5 measures (SPEC §4), the one home of every metric the recipes report.

* :mod:`s5lib.metrics.signal`: ``snr`` (the S5 "SDR"), ``si_sdr``, ``sdri``, ``EPS``.
* :mod:`s5lib.metrics.s5`: ``ca_sdri`` (2025), ``capi_sdri`` (2026), label accuracies,
  the per-mixture dataclasses and the :class:`S5Scorer` accumulator.
* :mod:`s5lib.metrics.naming`: the official file names of estimates/references and the
  2026 probability file.

Scoring a directory of wav files is ``python -m s5lib.bin.score`` (see that module).
"""
from s5lib.metrics.naming import (NamingError, SourceName, parse_source_filename,
                                  read_probabilities, source_filename)
from s5lib.metrics.s5 import (METRIC_NAME, MixtureResult, S5Scorer, SourceScore, best_pairing,
                              ca_sdri, capi_sdri, labels_match_multiset, labels_match_set,
                              score_mixture, source_accuracy, source_label_counts)
from s5lib.metrics.signal import EPS, sdri, si_sdr, snr

__all__ = [
    "EPS", "snr", "si_sdr", "sdri",
    "ca_sdri", "capi_sdri", "best_pairing", "score_mixture",
    "labels_match_set", "labels_match_multiset", "source_label_counts", "source_accuracy",
    "SourceScore", "MixtureResult", "S5Scorer", "METRIC_NAME",
    "NamingError", "SourceName", "parse_source_filename", "source_filename",
    "read_probabilities",
]
