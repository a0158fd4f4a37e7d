"""Reading and writing SOFA room-response files (netCDF-4 / HDF5) with h5py.

A SOFA file stores one impulse response per measurement: ``Data.IR`` has shape (M, R, N) for
M source positions, R receivers (here the 4 First-Order Ambisonics channels W, Y, Z, X) and N
samples. ``SourcePosition`` holds one position per measurement (or one row broadcast to all),
with a ``Type`` attribute ('cartesian' in metres, or 'spherical' as azimuth degrees, elevation
degrees, radius metres). ``Data.SamplingRate`` holds the sample rate.

Files written here follow the SOFA "SingleRoomSRIR" / "GeneralFIR" variable names and the
netCDF-4 on-disk layout (dimension scales M, R, N, C, I, E), so the official DCASE tools
(pysofaconventions / netCDF4) can read them, and the official DCASE files read here.

Our own extension: an optional ``DirectPathDelay`` variable of shape (M,) with the direct-path
delay of each response in samples (distance / speed of sound * sample rate), known exactly for
simulated rooms. Readers that do not know it simply ignore it.
"""
import os
import tempfile
from dataclasses import dataclass
from typing import Optional

import h5py
import numpy as np

N_FOA_RECEIVERS = 4

# netCDF-4 marks a dimension that has no coordinate variable with this NAME attribute.
_NETCDF_DIM_ONLY = "This is a netCDF dimension but not a netCDF variable.{:10d}"


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


def _set_text(obj, name, text):
    """Store a text attribute as fixed-length ASCII (netCDF NC_CHAR), as netCDF4 writes them."""
    obj.attrs.create(name, np.bytes_(str(text).encode("utf-8")))


def write_sofa(path, irs, positions, sample_rate, listener_position=(0.0, 0.0, 0.0),
               direct_delay=None, room_dim=None, title="", listener_in_room=None):
    """Write FOA room responses as a netCDF-4-compatible SOFA file (atomically).

    Args:
        path: output .sofa file.
        irs: (M, 4, N) impulse responses (W, Y, Z, X); float32 input is stored as float32
            (half the size), anything else as float64 like the DCASE files.
        positions: (M, 3) cartesian source positions in metres relative to the microphone
            (SourcePosition, Type 'cartesian'; the DCASE convention, see RoomResponses.cartesian).
        sample_rate: Hz.
        listener_position: (3,) or (M, 3) stored as ListenerPosition (informative only).
        direct_delay: optional (M,) direct-path delays in samples (our DirectPathDelay variable).
        room_dim: optional (3,) shoebox size in metres; makes the file a "SingleRoomSRIR" file
            with RoomType 'shoebox' and RoomCornerA/B (else "GeneralFIR", RoomType 'free field').
        title: the Title attribute.
        listener_in_room: optional (3,) microphone position inside the shoebox (room corner at
            the origin); used to place RoomCornerA/B in the coordinates of ``positions``.
            Without it the corners are (0, 0, 0) and ``room_dim``.
    """
    path = str(path)
    ir_dtype = np.float32 if np.asarray(irs).dtype == np.float32 else np.float64
    irs = np.asarray(irs)
    if irs.ndim != 3 or irs.shape[1] != N_FOA_RECEIVERS:
        raise SofaError(path, f"cannot write IRs of shape {irs.shape}, expected (M, 4, N)")
    if not np.all(np.isfinite(irs)):
        raise SofaError(path, "refusing to write NaN or infinite IR samples")
    n_meas, n_rec, n_samp = irs.shape
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape != (n_meas, 3):
        raise SofaError(path, f"positions have shape {positions.shape}, expected ({n_meas}, 3)")
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

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".sofa.tmp", dir=directory)
    os.close(fd)
    try:
        with h5py.File(tmp, "w", track_order=True) as f:
            shoebox = room_dim is not None
            for name, text in (
                    ("Conventions", "SOFA"), ("Version", "2.1"),
                    ("SOFAConventions", "SingleRoomSRIR" if shoebox else "GeneralFIR"),
                    ("SOFAConventionsVersion", "1.0"), ("APIName", "s5lib"),
                    ("APIVersion", "1.0"), ("AuthorContact", "n/a"), ("Organization", "n/a"),
                    ("License", "synthetic data, no restrictions"), ("DataType", "FIR"),
                    ("RoomType", "shoebox" if shoebox else "free field"),
                    ("Title", title), ("DateCreated", "n/a"), ("DateModified", "n/a"),
                    ("ListenerShortName", "foa"), ("Comment", "FOA W,Y,Z,X (ACN, SN3D)")):
                _set_text(f, name, text)

            sizes = {"M": n_meas, "R": n_rec, "N": n_samp, "C": 3, "I": 1, "E": 1}
            scales = {}
            for dim_id, (name, size) in enumerate(sizes.items()):
                scale = f.create_dataset(name, shape=(size,), dtype="f4")
                scale.make_scale(_NETCDF_DIM_ONLY.format(size))
                scale.attrs.create("_Netcdf4Dimid", np.int32(dim_id))
                scales[name] = scale

            def variable(name, data, dims, dtype=np.float64, **attrs):
                data = np.asarray(data, dtype=dtype).reshape([sizes[d] for d in dims])
                dataset = f.create_dataset(name, data=data)
                for axis, dim in enumerate(dims):
                    dataset.dims[axis].attach_scale(scales[dim])
                for key, value in attrs.items():
                    _set_text(dataset, key, value)
                return dataset

            listener_dims = ("I", "C") if listener.shape[0] == 1 else ("M", "C")
            variable("ListenerPosition", listener, listener_dims, Type="cartesian", Units="metre")
            variable("ListenerUp", [0.0, 0.0, 1.0], ("I", "C"), Type="cartesian", Units="metre")
            variable("ListenerView", [1.0, 0.0, 0.0], ("I", "C"), Type="cartesian", Units="metre")
            variable("ReceiverPosition", np.zeros((n_rec, 3, 1)), ("R", "C", "I"),
                     Type="cartesian", Units="metre")
            variable("SourcePosition", positions, ("M", "C"), Type="cartesian", Units="metre")
            variable("SourceUp", [0.0, 0.0, 1.0], ("I", "C"), Type="cartesian", Units="metre")
            variable("SourceView", [1.0, 0.0, 0.0], ("I", "C"), Type="cartesian", Units="metre")
            variable("EmitterPosition", np.zeros((1, 3, 1)), ("E", "C", "I"),
                     Type="cartesian", Units="metre")
            if shoebox:
                room_dim = np.asarray(room_dim, dtype=np.float64).reshape(3)
                origin = np.zeros(3) if listener_in_room is None else \
                    -np.asarray(listener_in_room, dtype=np.float64).reshape(3)
                variable("RoomCornerA", origin, ("I", "C"), Type="cartesian", Units="metre")
                variable("RoomCornerB", origin + room_dim, ("I", "C"), Type="cartesian",
                         Units="metre")
            variable("Data.SamplingRate", [float(sample_rate)], ("I",), Units="hertz")
            variable("Data.Delay", np.zeros((1, n_rec)), ("I", "R"))
            variable("Data.IR", irs, ("M", "R", "N"), dtype=ir_dtype, ChannelOrdering="acn",
                     Normalization="sn3d")
            if direct_delay is not None:
                variable("DirectPathDelay", direct_delay, ("M",), Units="samples",
                         Description="direct-path delay = distance / speed of sound * "
                                     "sample rate (s5lib extension)")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
