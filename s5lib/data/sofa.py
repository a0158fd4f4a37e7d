"""SOFA room-response files: written through sofar (pyfar's SOFA package), read with h5py.

A SOFA file stores one impulse response per measurement: ``Data.IR`` has shape (M, R, N) for
M source positions, R receivers (here the 4 First-Order Ambisonics channels W, Y, Z, X) and N
samples. ``SourcePosition`` holds one position per measurement (or one row broadcast to all),
with a ``Type`` attribute ('cartesian' in metres, or 'spherical' as azimuth degrees, elevation
degrees, radius metres). ``Data.SamplingRate`` holds the sample rate.

Writing (:func:`write_sofa`) goes through ``sofar``: the responses become a ``sofar.Sofa``
object of the convention "SingleRoomSRIR" 1.0 (shoebox rooms; "GeneralFIR" 1.0 without a room)
with every mandatory entry filled (DatabaseName, one ListenerPosition per measurement, room
corners, FOA receivers ...), and sofar checks it against the convention before it writes the
netCDF-4 file. :func:`verify_sofa` runs the same check on any file.

Reading (:func:`read_sofa`) stays our own h5py code, for three reasons:

* speed where it matters. The synthesizer (``SoundBank.room_ir``) opens a room file, reads
  one response and closes it, for every position it needs that is not in its LRU cache.
  sofar's only partial reader (``SofaStream``, netCDF4 underneath) does that 9-14 times slower
  than h5py, and ``sofar.read_sofa`` always reads the whole file;
* whole rooms: ``sofar.read_sofa(verify=True)`` takes 2-7 times as long as :func:`read_sofa`
  (without its check, sofar is as fast on 5.5 s responses and 4 times slower on 0.5 s ones);
* tolerance: the DCASE files and files made by other tools need not pass sofar's checks, and
  sofar cannot open a file without the SOFAConventions attribute at all. Our reader needs only
  Data.IR, SourcePosition and Data.SamplingRate and names exactly what is missing.
The tests check that both readers return the same responses, positions and sample rate, on
the files written here and on a file that sofar writes by itself.

Measured on the 2-core development VM (best of 5, warm page cache; sofar 1.3.0, h5py 3.16,
netCDF4 1.7.5) on mini-bank rooms of 24 positions (``python -m s5lib.bin.make_soundbank --out
DIR [--ir_seconds 5.5]``); ``python -m s5lib.data.sofa FILE.sofa`` repeats the read figures.
On a busy machine all of them grow, by up to 2 times, but keep their ratios:

==================================  ===================  ===================
                                    0.5 s responses      5.5 s responses
==================================  ===================  ===================
file size (float64)                 12.3 MB              135.2 MB
write_sofa via sofar                43 ms                248 ms
  (the former h5py writer, float32) (15 ms, 6.2 MB)      (73 ms, 67.6 MB)
read_sofa (ours, h5py)              4 ms                 51 ms
sofar.read_sofa verify=True         29 ms                102 ms
sofar.read_sofa verify=False        16 ms                50 ms
one response, open+read+close:
  h5py                              0.64 ms              1.17 ms
  sofar.SofaStream                  8.75 ms              10.87 ms
==================================  ===================  ===================

Storage: sofar stores every numeric variable as float64, so float32 responses are widened on
disk (exactly: read back as float32 they are bit-identical, which keeps synthesized mixtures
unchanged) and the files are twice as large as the former float32 ones. They are written
uncompressed: with sofar's default zlib compression netCDF keeps all measurements of a room
in one chunk, and reading a single 0.5 s response took 63 ms instead of 0.3 ms.

Our own extension: an optional ``DirectPathDelay`` variable of shape (M,) with the direct-path
delay of each response in samples (distance / speed of sound * sample rate), known exactly for
simulated rooms. Readers that do not know it simply ignore it (sofar reports it as a custom
variable, which its check allows).
"""
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Optional

import h5py
import numpy as np

N_FOA_RECEIVERS = 4

SOFAR_VERSION = "1.3.0"  # the sofar release this module was written and measured against
# Written into GLOBAL_DateCreated / DateModified: a fixed value, so that writing the same
# responses twice gives byte-identical files (the mini soundbank rebuilds bit-exactly).
FIXED_DATE = "1970-01-01 00:00:00"


class SofaError(ValueError):
    """Raised for a missing, unreadable or unsuitable SOFA file; the message starts with its path."""

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass
class RoomResponses:
    """The FOA room responses of one room, as read from one SOFA file.

    ``positions`` are the raw ``SourcePosition`` values (broadcast to M rows), in the coordinate
    system named by ``position_type``. ``listener_position`` is the raw ``ListenerPosition``
    (broadcast to (M, 3)), or None when the file has none.
    """
    path: str
    irs: np.ndarray  # (M, 4, L) float32 (empty (M, 4, 0) when read with load_irs=False)
    positions: np.ndarray  # (M, 3) float64 as stored in SourcePosition
    position_type: str  # 'cartesian' or 'spherical'
    sample_rate: int
    direct_delay: Optional[np.ndarray]  # (M,) float64 samples from geometry, None if absent
    listener_position: Optional[np.ndarray] = None  # (M, 3) float64 as stored, None if absent
    listener_position_type: str = "cartesian"

    @property
    def n_positions(self):
        return self.positions.shape[0]

    @property
    def cartesian(self):
        """(M, 3) source positions in metres, cartesian, relative to the microphone.

        Spherical positions (azimuth deg, elevation deg, radius m) are converted to x, y, z.
        ListenerPosition is NOT subtracted: the DCASE room files (written by SpatialScaper's
        SOFA writer) store SourcePosition already relative to the microphone and put the
        microphone's absolute position in the room into ListenerPosition, and the official
        synthesizers use SourcePosition directly as the direction of arrival. Files written by
        :func:`write_sofa` follow the same rule (their listener sits at the origin by default).
        """
        return _to_cartesian(self.positions, self.position_type)


def spherical_to_cartesian(spherical):
    """(…, 3) azimuth deg, elevation deg, radius m -> (…, 3) x, y, z metres (SOFA convention)."""
    spherical = np.asarray(spherical, dtype=np.float64)
    az = np.deg2rad(spherical[..., 0])
    el = np.deg2rad(spherical[..., 1])
    radius = spherical[..., 2]
    return np.stack([radius * np.cos(el) * np.cos(az),
                     radius * np.cos(el) * np.sin(az),
                     radius * np.sin(el)], axis=-1)


def _to_cartesian(values, position_type):
    if position_type == "spherical":
        return spherical_to_cartesian(values)
    return np.asarray(values, dtype=np.float64)


def _decode(value):
    """An HDF5 attribute (bytes, numpy string, 1-element array) as a plain Python str."""
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else ""
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _positions_as_rows(path, name, data, n_measurements):
    """Turn a stored (M, 3), (1, 3), (3,) or (M, 3, 1) position variable into (M, 3) float64."""
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[-1] == 1:  # (M, C, I) with I = 1
        arr = arr[..., 0]
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise SofaError(path, f"{name} has shape {tuple(np.shape(data))}, expected (M, 3) or (1, 3)")
    if arr.shape[0] == 1 and n_measurements != 1:
        arr = np.repeat(arr, n_measurements, axis=0)
    if arr.shape[0] != n_measurements:
        raise SofaError(path, f"{name} has {arr.shape[0]} rows but Data.IR has "
                              f"{n_measurements} measurements")
    if not np.all(np.isfinite(arr)):
        raise SofaError(path, f"{name} contains NaN or infinite values")
    return arr


def _position_type(path, dataset, name):
    kind = _decode(dataset.attrs.get("Type", "cartesian")).strip().lower()
    if kind not in ("cartesian", "spherical"):
        raise SofaError(path, f"{name} has unsupported Type {kind!r} "
                              "(expected 'cartesian' or 'spherical')")
    return kind


def read_sofa(path, load_irs=True):
    """Read the FOA room responses of one SOFA file.

    Args:
        path: the .sofa file.
        load_irs: read ``Data.IR`` (False: only its shape is checked, ``irs`` is (M, 4, 0)).
    Returns:
        :class:`RoomResponses`.
    Raises:
        SofaError naming the file for: a missing file, a file that is not HDF5/netCDF-4, no
        SourcePosition, no Data.IR, a receiver count other than 4, no sample rate, NaN in the IRs.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise SofaError(path, "file does not exist")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise SofaError(path, f"not a SOFA file (cannot be opened as netCDF-4/HDF5: {err})") from None
    with handle as f:
        if "Data.IR" not in f:
            raise SofaError(path, "no Data.IR variable (not a SOFA FIR file)")
        ir_dataset = f["Data.IR"]
        if ir_dataset.ndim != 3:
            raise SofaError(path, f"Data.IR has shape {ir_dataset.shape}, expected (M, R, N)")
        n_measurements, n_receivers, n_samples = ir_dataset.shape
        if n_receivers != N_FOA_RECEIVERS:
            raise SofaError(path, f"Data.IR has {n_receivers} receivers, expected "
                                  f"{N_FOA_RECEIVERS} (FOA W, Y, Z, X); shape {ir_dataset.shape}")
        if "SourcePosition" not in f:
            raise SofaError(path, "no SourcePosition variable (source positions are required)")
        source = f["SourcePosition"]
        position_type = _position_type(path, source, "SourcePosition")
        positions = _positions_as_rows(path, "SourcePosition", source[()], n_measurements)

        listener_position = None
        listener_type = "cartesian"
        if "ListenerPosition" in f:
            listener = f["ListenerPosition"]
            listener_type = _position_type(path, listener, "ListenerPosition")
            listener_position = _positions_as_rows(path, "ListenerPosition", listener[()],
                                                   n_measurements)

        if "Data.SamplingRate" not in f:
            raise SofaError(path, "no Data.SamplingRate variable (sample rate missing)")
        rates = np.asarray(f["Data.SamplingRate"][()], dtype=np.float64).reshape(-1)
        if rates.size == 0 or not np.all(np.isfinite(rates)) or rates[0] <= 0:
            raise SofaError(path, f"invalid Data.SamplingRate {rates.tolist()}")
        if np.any(rates != rates[0]):
            raise SofaError(path, f"Data.SamplingRate differs between measurements {rates.tolist()}")
        sample_rate = int(round(rates[0]))

        direct_delay = None
        if "DirectPathDelay" in f:
            direct_delay = np.asarray(f["DirectPathDelay"][()], dtype=np.float64).reshape(-1)
            if direct_delay.shape[0] != n_measurements:
                raise SofaError(path, f"DirectPathDelay has {direct_delay.shape[0]} values, "
                                      f"expected {n_measurements}")

        if load_irs:
            irs = np.asarray(ir_dataset[()], dtype=np.float32)
            if not np.all(np.isfinite(irs)):
                bad = np.unique(np.nonzero(~np.isfinite(irs))[0])
                raise SofaError(path, f"Data.IR contains NaN or infinite samples "
                                      f"(measurements {bad[:10].tolist()})")
        else:
            irs = np.zeros((n_measurements, n_receivers, 0), dtype=np.float32)
    return RoomResponses(path=path, irs=irs, positions=positions, position_type=position_type,
                         sample_rate=sample_rate, direct_delay=direct_delay,
                         listener_position=listener_position,
                         listener_position_type=listener_type)


def _sofar():
    """The sofar package, imported on first use (it pulls in netCDF4, ~0.7 s to import)."""
    try:
        import sofar
    except ImportError as err:
        raise ImportError(f"writing or verifying SOFA files needs the 'sofar' package "
                          f"(pip install sofar=={SOFAR_VERSION}): {err}") from None
    return sofar


def _one_line(report):
    """sofar's multi-line issue report (headings underlined with dashes) on one line."""
    lines = [line.strip() for line in str(report).splitlines()]
    return "; ".join(line for line in lines if line and not set(line) <= {"-"})


def _set_or_add_attribute(sofa, name, value):
    """Set an attribute the convention defines, or add it as a custom one."""
    if hasattr(sofa, name):
        setattr(sofa, name, value)
    else:
        sofa.add_attribute(name, value)


def _set_or_add_variable(sofa, name, value, dimensions):
    """Set a (double) variable the object already has, or add it (optional or custom)."""
    if hasattr(sofa, name):
        setattr(sofa, name, value)
    else:
        sofa.add_variable(name, value, "double", dimensions)


def _build_sofa_object(irs, positions, sample_rate, listener, direct_delay, room_dim, title,
                       listener_in_room, database_name):
    """The ``sofar.Sofa`` object write_sofa stores (inputs already checked)."""
    from s5lib import __version__

    sofar = _sofar()
    n_meas, n_rec, _ = irs.shape
    shoebox = room_dim is not None
    convention = "SingleRoomSRIR" if shoebox else "GeneralFIR"
    sofa = sofar.Sofa(convention, mandatory=True)
    # The receivers are described in global attributes: sofar 1.3.0 cannot write string
    # variables such as ReceiverDescriptions with netCDF4 >= 1.7.4 (its stringtochar call
    # fails), and its add_attribute refuses names like Data_IR_ChannelOrdering.
    for name, value in (
            ("GLOBAL_Title", title), ("GLOBAL_DatabaseName", database_name),
            ("GLOBAL_DateCreated", FIXED_DATE), ("GLOBAL_DateModified", FIXED_DATE),
            ("GLOBAL_AuthorContact", "n/a"), ("GLOBAL_Organization", "n/a"),
            ("GLOBAL_License", "synthetic data, no restrictions"),
            ("GLOBAL_ApplicationName", "s5lib"), ("GLOBAL_ApplicationVersion", __version__),
            ("GLOBAL_Comment", "FOA W,Y,Z,X (ACN, SN3D)"),
            ("GLOBAL_ListenerShortName", "foa"),
            ("GLOBAL_ReceiverShortName", "FOA W,Y,Z,X"),
            ("GLOBAL_ReceiverDescription",
             "the 4 First-Order Ambisonics channels W, Y, Z, X (ACN order, SN3D "
             "normalisation), all at the centre of the microphone")):
        _set_or_add_attribute(sofa, name, value)

    # SingleRoomSRIR allows only one ListenerPosition per measurement (M, C).
    if shoebox and listener.shape[0] != n_meas:
        listener = np.repeat(listener, n_meas, axis=0)
    sofa.ListenerPosition = listener
    sofa.ListenerPosition_Type = "cartesian"
    sofa.ListenerPosition_Units = "metre"
    _set_or_add_variable(sofa, "ListenerView", np.array([[1.0, 0.0, 0.0]]), "IC")
    _set_or_add_attribute(sofa, "ListenerView_Type", "cartesian")
    _set_or_add_attribute(sofa, "ListenerView_Units", "metre")
    if shoebox:  # GeneralFIR has no ListenerUp / SourceView / SourceUp
        sofa.ListenerUp = np.array([[0.0, 0.0, 1.0]])
        sofa.SourceView = np.array([[1.0, 0.0, 0.0]])
        sofa.SourceUp = np.array([[0.0, 0.0, 1.0]])
    # The 4 receivers (FOA channels) share the centre of the microphone. SingleRoomSRIR wants
    # (R, C, I), GeneralFIR (R, C).
    sofa.ReceiverPosition = np.zeros((n_rec, 3, 1) if shoebox else (n_rec, 3))
    sofa.ReceiverPosition_Type = "cartesian"
    sofa.ReceiverPosition_Units = "metre"
    sofa.SourcePosition = positions
    sofa.SourcePosition_Type = "cartesian"
    sofa.SourcePosition_Units = "metre"
    sofa.EmitterPosition = np.zeros((1, 3, 1))
    sofa.EmitterPosition_Type = "cartesian"
    sofa.EmitterPosition_Units = "metre"
    if shoebox:
        room_dim = np.asarray(room_dim, dtype=np.float64).reshape(3)
        origin = np.zeros(3) if listener_in_room is None else \
            -np.asarray(listener_in_room, dtype=np.float64).reshape(3)
        sofa.add_variable("RoomCornerA", origin[None, :], "double", "IC")
        sofa.add_variable("RoomCornerB", (origin + room_dim)[None, :], "double", "IC")
        # RoomCorners only carries the Type and Units of the corners (its value is ignored).
        sofa.add_variable("RoomCorners", 0.0, "double", "I")
        sofa.add_attribute("RoomCorners_Type", "cartesian")
        sofa.add_attribute("RoomCorners_Units", "metre")
        sofa.add_variable("RoomVolume", float(np.prod(room_dim)), "double", "I")
        sofa.add_attribute("RoomVolume_Units", "cubic metre")
    # sofar stores every numeric variable as double: float32 responses are widened exactly.
    sofa.Data_IR = irs.astype(np.float64)
    sofa.Data_SamplingRate = float(sample_rate)
    sofa.Data_SamplingRate_Units = "hertz"
    sofa.Data_Delay = np.zeros((1, n_rec))
    if direct_delay is not None:
        sofa.add_variable("DirectPathDelay", direct_delay, "double", "M")
        sofa.add_attribute("DirectPathDelay_Units", "samples")
        sofa.add_attribute("DirectPathDelay_Description",
                           "direct-path delay = distance / speed of sound * sample rate "
                           "(s5lib extension)")
    return sofa


def write_sofa(path, irs, positions, sample_rate, listener_position=(0.0, 0.0, 0.0),
               direct_delay=None, room_dim=None, title="", listener_in_room=None,
               database_name="s5lib synthetic rooms"):
    """Write FOA room responses as a SOFA file through sofar (atomically, deterministically).

    The file follows the SOFA convention "SingleRoomSRIR" 1.0 when ``room_dim`` is given (else
    "GeneralFIR" 1.0) with every mandatory entry filled, and passes
    ``sofar.read_sofa(path, verify=True)`` (see :func:`verify_sofa`).

    Args:
        path: output .sofa file (the name must end in ``.sofa``, which sofar enforces).
        irs: (M, 4, N) impulse responses (W, Y, Z, X). Stored as float64, as sofar stores every
            numeric variable; float32 input widens exactly, so reading it back as float32 gives
            the same values bit for bit.
        positions: (M, 3) cartesian source positions in metres relative to the microphone
            (SourcePosition, Type 'cartesian'; the DCASE convention, see RoomResponses.cartesian).
        sample_rate: Hz.
        listener_position: (3,) or (M, 3) stored as ListenerPosition (informative only;
            repeated to (M, 3) in SingleRoomSRIR files, which require one row per measurement).
        direct_delay: optional (M,) direct-path delays in samples (our DirectPathDelay variable).
        room_dim: optional (3,) shoebox size in metres; makes the file a "SingleRoomSRIR" file
            with RoomType 'shoebox', RoomCornerA/B and RoomVolume (else "GeneralFIR",
            RoomType 'free field').
        title: the Title attribute.
        listener_in_room: optional (3,) microphone position inside the shoebox (room corner at
            the origin); used to place RoomCornerA/B in the coordinates of ``positions``.
            Without it the corners are (0, 0, 0) and ``room_dim``.
        database_name: the DatabaseName attribute (mandatory in SingleRoomSRIR).
    Raises:
        SofaError naming the file for bad shapes, NaN samples, a name without ``.sofa``, or
        data that sofar's convention check refuses.
    """
    path = str(path)
    irs = np.asarray(irs)
    if irs.ndim != 3 or irs.shape[1] != N_FOA_RECEIVERS:
        raise SofaError(path, f"cannot write IRs of shape {irs.shape}, expected (M, 4, N)")
    if not np.issubdtype(irs.dtype, np.floating) and not np.issubdtype(irs.dtype, np.integer):
        raise SofaError(path, f"cannot write IRs of dtype {irs.dtype}, expected real numbers")
    if not np.all(np.isfinite(irs)):
        raise SofaError(path, "refusing to write NaN or infinite IR samples")
    if not path.endswith(".sofa"):
        raise SofaError(path, "the file name must end in .sofa (sofar writes no other name)")
    n_meas = irs.shape[0]
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape != (n_meas, 3):
        raise SofaError(path, f"positions have shape {positions.shape}, expected ({n_meas}, 3)")
    if not np.all(np.isfinite(positions)):
        raise SofaError(path, "refusing to write NaN or infinite source positions")
    listener = np.asarray(listener_position, dtype=np.float64)
    if listener.shape == (3,):
        listener = listener[None, :]
    if listener.shape not in ((1, 3), (n_meas, 3)):
        raise SofaError(path, f"listener_position has shape {listener.shape}, "
                              f"expected (3,) or ({n_meas}, 3)")
    if direct_delay is not None:
        direct_delay = np.asarray(direct_delay, dtype=np.float64).reshape(-1)
        if direct_delay.shape != (n_meas,):
            raise SofaError(path, f"direct_delay has {direct_delay.shape[0]} values, "
                                  f"expected {n_meas}")
    if not (np.isfinite(sample_rate) and sample_rate > 0):
        raise SofaError(path, f"invalid sample rate {sample_rate!r}")

    try:
        sofa = _build_sofa_object(irs, positions, sample_rate, listener, direct_delay,
                                  room_dim, title, listener_in_room, database_name)
    except (ValueError, TypeError) as err:
        raise SofaError(path, f"cannot be described as a SOFA object: {err}") from None
    sofar = _sofar()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # A hidden temporary next to the target, then an atomic rename. It ends in .sofa because
    # sofar replaces any other suffix by .sofa.
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                               suffix=".partial.sofa", dir=directory)
    os.close(fd)
    try:
        # compression=0: contiguous Data.IR. With sofar's default (zlib level 4) netCDF puts
        # all measurements in one chunk and reading one response decompresses the whole room.
        try:
            sofar.write_sofa(tmp, sofa, compression=0)
        except ValueError as err:  # sofar's convention check on writing
            raise SofaError(path, f"sofar refuses to write it: {_one_line(err)}") from None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def verify_sofa(path):
    """Check one SOFA file against its convention with sofar, the reference implementation.

    Returns:
        the ``sofar.Sofa`` object read from ``path``.
    Raises:
        SofaError naming the file when it is missing, when sofar cannot read it, or with
        sofar's list of problems when its verification reports any (errors such as wrong
        shapes, and warnings such as a missing mandatory attribute that sofar would fill in).
    """
    path = str(path)
    if not os.path.isfile(path):
        raise SofaError(path, "file does not exist")
    if not path.endswith(".sofa"):
        raise SofaError(path, "sofar only reads file names ending in .sofa")
    sofar = _sofar()
    try:
        sofa = sofar.read_sofa(path, verify=False, verbose=False)
    except Exception as err:  # netCDF4 / sofar raise many kinds (OSError, AttributeError ...)
        raise SofaError(path, f"sofar cannot read it ({type(err).__name__}: {err})") from None
    # issue_handling="raise": sofar raises ValueError listing the errors (a missing mandatory
    # entry counts as one) and issues the warnings as a UserWarning. ("return" would drop the
    # warnings of a file without errors.)
    problems = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            sofa.verify(issue_handling="raise", mode="read")
        except ValueError as err:
            problems.append(_one_line(err))
        except Exception as err:
            raise SofaError(path, f"sofar cannot verify it ({type(err).__name__}: {err})") \
                from None
    problems += [_one_line(w.message) for w in caught
                 if issubclass(w.category, UserWarning) and "WARNINGS" in str(w.message)]
    if problems:
        raise SofaError(path, "fails sofar's SOFA convention check: " + "; ".join(problems))
    return sofa


def _best_time(function, repeat):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None):
    """``python -m s5lib.data.sofa [--repeat K] FILE.sofa ...``: check each file with sofar and
    time our reader against sofar's (best of K runs), as quoted in the module docstring."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m s5lib.data.sofa", description=main.__doc__)
    parser.add_argument("files", nargs="+", help=".sofa files")
    parser.add_argument("--repeat", type=int, default=5, help="timing runs, the best counts")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    sofar = _sofar()
    failed = 0
    for path in args.files:
        passes = sofar_reads = True
        try:
            verify_sofa(path)
            status = "passes sofar's convention check"
        except SofaError as err:
            status = err.problem
            passes, sofar_reads = False, not err.problem.startswith("sofar cannot read")
            failed += 1
        print(f"{path}: {status}")
        try:
            ours = read_sofa(path)
        except SofaError as err:
            print(f"  not readable here: {err.problem}")
            continue
        n = ours.n_positions

        def one_response_each(open_and_read):
            for index in range(n):
                open_and_read(index)

        def h5py_one(index):
            with h5py.File(path, "r") as f:
                np.asarray(f["Data.IR"][index], dtype=np.float32)

        def stream_one(index):
            with sofar.SofaStream(path) as f:
                np.asarray(f.Data_IR[index], dtype=np.float32)

        timings = [("read_sofa (ours, h5py)", lambda: read_sofa(path), 1)]
        if passes:
            timings.append(("sofar.read_sofa verify=True",
                            lambda: sofar.read_sofa(path, verify=True, verbose=False), 1))
        if sofar_reads:
            timings.append(("sofar.read_sofa verify=False",
                            lambda: sofar.read_sofa(path, verify=False, verbose=False), 1))
        timings.append(("one response, open+read+close, h5py",
                        lambda: one_response_each(h5py_one), n))
        if sofar_reads:
            timings.append(("one response, open+read+close, sofar.SofaStream",
                            lambda: one_response_each(stream_one), n))
        print(f"  {n} positions x {ours.irs.shape[2]} samples at {ours.sample_rate} Hz, "
              f"{os.path.getsize(path) / 1e6:.1f} MB")
        for label, function, per in timings:
            print(f"  {label}: {_best_time(function, args.repeat) / per * 1e3:.2f} ms")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
