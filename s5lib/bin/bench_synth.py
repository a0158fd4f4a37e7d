"""Benchmark: time to synthesize one on-the-fly training mixture on one CPU core.

Each timed mixture has 3 targets, 2 interferers and background noise (draw + render). Three
renders are timed, each what one trainer reads (:mod:`s5lib.data.training_data`):

* ``full``: 4 channels and the targets' direct-path references (the separator);
* ``4-channel tagger``: 4 channels, no references (the 2026 4-channel tagger);
* ``1-channel tagger``: channel 0 only, no references (the 2025 and 2026 1-channel taggers);
* ``device-synthesis worker``: what a DataLoader worker does with ``synthesis: device``
  (:func:`s5lib.data.gpu_synth.prepare_raw`: read, place and pack the sources and room
  responses; the FFTs then run on the GPU).

Cores a trainer needs per GPU: its mixtures/s on the GPU (``bench_train``, model alone) divided
by the per-core rate printed here for its render (or for the device-synthesis worker).

Prints the median and the 90th percentile for the embedded mini soundbank and for the same bank
with 5.5 s room responses (the real bank's length). The banks' SOFA files store the responses
as float64, as the DCASE files do (the synthesizer reads them as float32). Each render times
the same mixtures twice: ``cold`` (first reads of clips, responses and response spectra) and
``warm`` (what a long training run sees once the bank's spectrum cache, ``S5_SPECTRUM_CACHE_MB``,
holds the room positions; the cache's size at the end is printed).

    python -m s5lib.bin.bench_synth [--n_mix 50] [--work_dir /tmp/s5_bench] [--year 2025]

Banks are built under ``work_dir`` on first use and reused afterwards.

Against the organisers' synthesizer: ``--spaudsyn DIR`` (a checkout of nttcslab/SpAudSyn, the
folder holding its ``src``; it needs ``librosa`` and ``python-sofa``, which this toolkit does not
install) also times ``SpAudSyn.synthesize`` on the same mixtures (same clips, onsets, SNRs,
room positions; the targets' channel-0 direct-path references, ``fg_return={'dry': True,
'dry_channel': 0}``), once on the bank's float64 room files and once on a float32 copy of them
(``--spaudsyn_room_dtypes``; the copies are written under ``work_dir``), and prints how many
times faster each render of ours is and how far SpAudSyn's mixtures are from ours. SpAudSyn
has no caches of its own, so its ``warm`` pass differs from ``cold`` by the operating system's
page cache only.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as stated above
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402

from s5lib.config import parse_config  # noqa: E402

DEFAULTS = {"n_mix": 50, "work_dir": "/tmp/s5_bench", "year": 2025, "seed": 0,
            "long_ir_seconds": 5.5, "size": "mini", "skip_long": False,
            "spaudsyn": None, "spaudsyn_room_dtypes": "float64,float32"}


RENDERS = (("full render", dict(with_references=True)),
           ("4-channel tagger render", dict(with_references=False)),
           ("1-channel tagger render", dict(with_references=False, channels=[0])),
           ("device-synthesis worker (no FFTs)", dict(device_worker=True)))


def _metadata(bank_root, year, n_mix, seed):
    """The bank, our synthesizer and the ``n_mix`` timed metadata dicts (as :func:`time_bank`)."""
    from s5lib.data.synth import FoaSynthesizer, SoundBank, SynthConfig
    bank = SoundBank(bank_root, "train", cache_audio=True)
    synth = FoaSynthesizer(bank, SynthConfig(year=year, n_targets=(3, 3), n_interferers=(2, 2)))
    return bank, synth, [synth.sample_metadata(np.random.default_rng([seed, i])) for i in range(n_mix)]


def time_bank(bank_root, year, n_mix, seed, device_worker=False, **render):
    """(cold, warm) milliseconds per mixture, and the spectrum cache's MiB at the end."""
    from s5lib.data.gpu_synth import bank_ir_length, prepare_raw
    bank, synth, metadata = _metadata(bank_root, year, n_mix, seed)
    for i in range(3):  # read the audio clips once
        synth.synthesize(np.random.default_rng([seed, 99, i]))
    ir_length = bank_ir_length(bank, synth.cfg.sample_rate) if device_worker else None
    passes = []
    for _ in range(2):
        times = []
        for meta in metadata:
            t0 = time.perf_counter()
            if device_worker:
                prepare_raw(synth, meta, ir_length)
            else:
                synth.render(meta, with_wet=False, **render)
            times.append(time.perf_counter() - t0)
        passes.append(np.array(times) * 1e3)
    return passes[0], passes[1], bank._spectrum_cache_used / 2 ** 20


def copy_sofa(src, dst, ir_dtype):
    """Copy the SOFA (netCDF-4) file ``src`` to ``dst`` with ``Data.IR`` stored as ``ir_dtype``."""
    import netCDF4
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with netCDF4.Dataset(src, "r") as a, netCDF4.Dataset(dst + ".part", "w", format=a.data_model) as b:
        b.setncatts({k: a.getncattr(k) for k in a.ncattrs()})
        for name, dim in a.dimensions.items():
            b.createDimension(name, None if dim.isunlimited() else len(dim))
        for name, var in a.variables.items():
            dtype = np.dtype(ir_dtype) if name == "Data.IR" else var.datatype
            out = b.createVariable(name, dtype, var.dimensions)
            out.setncatts({k: var.getncattr(k) for k in var.ncattrs()})
            out[...] = var[...]
    os.replace(dst + ".part", dst)


def spaudsyn_metadata(bank, synth, meta, room_path, positions, ir_shape, sample_rate):
    """Our metadata dict as SpAudSyn's: absolute clip paths, the measured position our render
    picks for each event (SpAudSyn matches positions exactly), its ``SofaRoom`` on ``room_path``."""
    room = meta["room"]
    cart, raw, _, _ = bank.room_positions(room)
    root = os.path.abspath(bank.root)

    def event(ev, role):
        idx = synth._position_index(room, cart, raw, ev["event_position"])
        return dict(label=ev["label"], source_file=os.path.abspath(bank.resolve(ev["source_file"])),
                    source_time=ev["source_time"], event_time=ev["event_time"],
                    event_duration=ev["event_duration"], snr=ev["snr"], role=role,
                    event_position=[positions[idx].tolist()])

    cfg = synth.cfg
    config = dict(duration=cfg.duration, sr=cfg.sample_rate, ref_db=cfg.ref_db,
                  max_event_overlap=cfg.max_event_overlap, max_event_dur=cfg.max_event_dur,
                  foreground_dir=root, background_dir=root, interference_dir=root,
                  room_config=None, verbose=False)
    background = [dict(label=None, source_file=os.path.abspath(bank.resolve(ev["source_file"])),
                       source_time=ev.get("source_time"), event_time=0,
                       event_duration=ev.get("event_duration") or cfg.duration, snr=ev.get("snr") or 0)
                  for ev in meta.get("bg_events", [])]
    room_info = dict(sofa_path=room_path, sr=sample_rate, nchan=ir_shape[1], nrir=ir_shape[0],
                     rir_len=ir_shape[2], direct_range_ms=list(cfg.direct_path_ms))
    return {"config": config, "fg_events": [event(ev, "foreground") for ev in meta["fg_events"]],
            "int_events": [event(ev, "interference") for ev in meta.get("int_events", [])],
            "bg_events": background,
            "room": {"module": "src.room", "main": "SofaRoom.from_metadata",
                     "args": {"metadata": room_info}}}


def spaudsyn_class(spaudsyn_dir):
    """The ``SpAudSyn`` class of the checkout ``spaudsyn_dir``; a clear error when the folder
    or SpAudSyn's requirements are missing."""
    import sys
    spaudsyn_dir = os.path.abspath(spaudsyn_dir)
    if not os.path.isfile(os.path.join(spaudsyn_dir, "src", "spatial_audio_synthesizer.py")):
        raise SystemExit(f"--spaudsyn {spaudsyn_dir}: no src/spatial_audio_synthesizer.py there "
                         f"(give the folder of a SpAudSyn checkout)")
    try:
        import sofa  # noqa: F401
        import librosa  # noqa: F401
    except ImportError as err:
        raise SystemExit(f"--spaudsyn needs SpAudSyn's requirements (librosa, python-sofa): {err}")
    if spaudsyn_dir not in sys.path:
        sys.path.insert(0, spaudsyn_dir)
    from src.spatial_audio_synthesizer import SpAudSyn
    return SpAudSyn


def time_spaudsyn(spaudsyn_dir, bank_root, copy_root, room_dtype, year, n_mix, seed):
    """(cold, warm) milliseconds per mixture of SpAudSyn on the mixtures :func:`time_bank` times,
    its rooms read from float64 (the bank's files) or float32 copies under ``copy_root``, and
    the largest difference between its mixture and ours on the first three, relative to the
    mixture's peak."""
    SpAudSyn = spaudsyn_class(spaudsyn_dir)
    import sofa  # python-sofa, SpAudSyn's reader: the positions as it sees them
    bank, synth, metadata = _metadata(bank_root, year, n_mix, seed)
    rooms = {}
    for meta in metadata:
        room = meta["room"]
        if room in rooms:
            continue
        src = bank.resolve(room)
        path = src
        if room_dtype != "float64":
            path = os.path.join(copy_root, room)
            if not os.path.isfile(path) or os.path.getmtime(path) < os.path.getmtime(src):
                copy_sofa(src, path, room_dtype)
        db = sofa.Database.open(path, mode="r", parallel=False)
        try:
            positions = np.asarray(db.Source.Position.get_values(system="cartesian"))
            shape = tuple(db.Data.IR.shape)
            sample_rate = int(db.Data.SamplingRate.get_values()[0])
        finally:
            db.close()
        rooms[room] = (path, positions, shape, sample_rate)
    converted = [spaudsyn_metadata(bank, synth, meta, *rooms[meta["room"]]) for meta in metadata]
    SpAudSyn.from_metadata(converted[0]).synthesize(fg_return={"dry": True, "dry_channel": 0})
    passes = []
    for _ in range(2):
        times = []
        for meta in converted:
            t0 = time.perf_counter()
            SpAudSyn.from_metadata(meta).synthesize(fg_return={"dry": True, "dry_channel": 0})
            times.append(time.perf_counter() - t0)
        passes.append(np.array(times) * 1e3)
    worst = 0.0  # agreement of the two renders on the first mixtures (a check, not a timing)
    for meta, theirs in zip(metadata[:3], converted[:3]):
        ref = SpAudSyn.from_metadata(theirs).synthesize()["mixture"]
        worst = max(worst, float(np.max(np.abs(synth.render(meta).mixture - ref)) / np.max(np.abs(ref))))
    return passes[0], passes[1], worst


def _line(label, ms):
    return (f"{label:66s} median {np.median(ms):7.1f} ms   p90 {np.percentile(ms, 90):7.1f} ms   "
            f"({1000 / np.median(ms):5.1f} mixtures/s per core)")


def main(argv=None):
    cfg = parse_config(DEFAULTS, argv, description=__doc__)
    from s5lib.data.soundbank import build_mini_soundbank
    dtypes = [d.strip() for d in str(cfg["spaudsyn_room_dtypes"]).split(",") if d.strip()]
    if cfg["spaudsyn"]:
        spaudsyn_class(cfg["spaudsyn"])  # fail before any timing
        for dtype in dtypes:
            if dtype not in ("float64", "float32"):
                raise SystemExit(f"--spaudsyn_room_dtypes: {dtype!r} is neither float64 nor float32")
    variants = [(f"{cfg['size']} bank", None)]
    if not cfg["skip_long"]:
        seconds = cfg["long_ir_seconds"]
        variants.append((f"{cfg['size']} bank, {seconds} s room responses", seconds))
    print(f"synthesis benchmark: {cfg['n_mix']} mixtures, 3 targets + 2 interferers + noise, 1 core")
    for name, ir_seconds in variants:
        suffix = "" if ir_seconds is None else f"_ir{ir_seconds:g}s"
        root = os.path.join(cfg["work_dir"], f"dev_set_{cfg['size']}{suffix}")
        build_mini_soundbank(root, seed=cfg["seed"], size=cfg["size"], ir_seconds=ir_seconds)
        ours = {}
        for render, options in RENDERS:
            cold, warm, cache_mb = time_bank(root, int(cfg["year"]), int(cfg["n_mix"]), cfg["seed"],
                                             **options)
            ours[render] = {"cold": cold, "warm": warm}
            for state, ms in (("cold", cold), ("warm", warm)):
                print(_line(f"{name}, {render}, {state}", ms))
            print(f"{'':66s} spectrum cache {cache_mb:.0f} MiB")
        if cfg["spaudsyn"]:
            for dtype in dtypes:
                cold, warm, worst = time_spaudsyn(cfg["spaudsyn"], root, f"{root}_rooms_{dtype}",
                                                  dtype, int(cfg["year"]), int(cfg["n_mix"]),
                                                  cfg["seed"])
                for state, ms in (("cold", cold), ("warm", warm)):
                    label = f"{name}, SpAudSyn, {dtype} rooms, {state}"
                    ratios = ", ".join(f"{render.removesuffix(' render')} "
                                       f"{np.median(ms) / np.median(ours[render][state]):.2f}x"
                                       for render, _ in RENDERS[:3])
                    print(_line(label, ms))
                    print(f"{'':66s} ours faster by: {ratios}")
                print(f"{'':66s} mixtures agree: max |ours - SpAudSyn| = {worst:.1e} of the peak")


if __name__ == "__main__":
    main()
