"""SOFA I/O (written through sofar, read with h5py) and the FOA image-source room simulator."""
import glob
import math
import os
import warnings

import h5py
import numpy as np
import pytest
import sofar

from s5lib.data.rooms import (SPEED_OF_SOUND, foa_encode, image_sources, make_room,
                              simulate_foa_rir, wall_reflection_coefficient)
from s5lib.data.sofa import (SofaError, main as sofa_main, read_sofa,
                             spherical_to_cartesian, verify_sofa, write_sofa)

SR = 32000


# ------------------------------------------------------------------------------------- SOFA


def _example(m=5, n=64, dtype=np.float32):
    rng = np.random.default_rng(0)
    irs = rng.standard_normal((m, 4, n)).astype(dtype)
    positions = rng.uniform(-3, 3, (m, 3))
    return irs, positions


def test_sofa_round_trip(tmp_path):
    irs, positions = _example()
    delays = np.linspace(10.5, 30.25, len(irs))
    path = str(tmp_path / "room.sofa")
    write_sofa(path, irs, positions, SR, direct_delay=delays, room_dim=(6, 5, 3),
               listener_in_room=(3, 2.5, 1.5), title="test room")
    rr = read_sofa(path)
    assert rr.path == path
    assert rr.irs.dtype == np.float32 and rr.irs.shape == irs.shape
    np.testing.assert_array_equal(rr.irs, irs)
    np.testing.assert_array_equal(rr.positions, positions)
    np.testing.assert_array_equal(rr.cartesian, positions)
    np.testing.assert_array_equal(rr.direct_delay, delays)
    assert rr.position_type == "cartesian" and rr.sample_rate == SR
    # SingleRoomSRIR wants one ListenerPosition per measurement: the row is repeated
    np.testing.assert_array_equal(rr.listener_position, np.zeros((len(irs), 3)))
    with h5py.File(path, "r") as f:  # standard SOFA names and attributes
        assert f.attrs["Conventions"] == b"SOFA"
        assert f.attrs["SOFAConventions"] == b"SingleRoomSRIR"
        assert f.attrs["DataType"] == b"FIR"
        assert f.attrs["Title"] == b"test room"
        assert f.attrs["DatabaseName"] == b"s5lib synthetic rooms"
        assert f["SourcePosition"].attrs["Type"] == b"cartesian"
        assert f["SourcePosition"].attrs["Units"] == b"metre"
        assert f["Data.IR"].dims[0][0].name == "/M"  # netCDF dimension scales
        # sofar stores doubles; float32 input widens exactly; uncompressed, one block
        assert f["Data.IR"].dtype == np.float64 and f["Data.IR"].chunks is None
        np.testing.assert_array_equal(f["Data.IR"][()], irs.astype(np.float64))
        np.testing.assert_array_equal(f["RoomCornerA"][()], [[-3, -2.5, -1.5]])
        np.testing.assert_allclose(f["RoomCornerB"][()] - f["RoomCornerA"][()], [[6, 5, 3]])
        assert f["RoomVolume"][()].reshape(-1)[0] == pytest.approx(90.0)
    checked = verify_sofa(path)  # passes sofar's convention check, values as written
    assert checked.GLOBAL_SOFAConventions == "SingleRoomSRIR"
    np.testing.assert_array_equal(checked.Data_IR, irs.astype(np.float64))
    np.testing.assert_array_equal(checked.DirectPathDelay, delays)
    only_positions = read_sofa(path, load_irs=False)
    assert only_positions.irs.shape == (len(irs), 4, 0)


def test_sofa_float64_without_delay_is_general_fir(tmp_path):
    irs, positions = _example(dtype=np.float64)
    path = str(tmp_path / "room64.sofa")
    write_sofa(path, irs, positions, 24000)
    rr = read_sofa(path)
    assert rr.direct_delay is None and rr.sample_rate == 24000
    np.testing.assert_allclose(rr.irs, irs.astype(np.float32))
    np.testing.assert_array_equal(rr.listener_position, np.zeros((len(irs), 3)))  # broadcast
    with h5py.File(path, "r") as f:
        assert f.attrs["SOFAConventions"] == b"GeneralFIR"
        assert f.attrs["RoomType"] == b"free field"
        assert f["Data.IR"].dtype == np.float64
        np.testing.assert_array_equal(f["Data.IR"][()], irs)  # float64 kept as it is
        assert f["ListenerPosition"].shape == (1, 3)  # GeneralFIR allows one row
        assert "RoomCornerA" not in f and "DirectPathDelay" not in f
    assert verify_sofa(path).GLOBAL_SOFAConventions == "GeneralFIR"


def test_sofa_write_is_deterministic(tmp_path):
    irs, positions = _example()
    a, b = str(tmp_path / "a.sofa"), str(tmp_path / "b.sofa")
    write_sofa(a, irs, positions, SR, direct_delay=np.arange(5.0))
    write_sofa(b, irs, positions, SR, direct_delay=np.arange(5.0))
    assert open(a, "rb").read() == open(b, "rb").read()
    assert sorted(os.listdir(tmp_path)) == ["a.sofa", "b.sofa"]  # no temporary left behind


def _hand_made_sofa(path, ir_shape=(3, 4, 16), positions=None, position_type=b"cartesian",
                    sample_rate=True, nan=False):
    """A minimal SOFA-like HDF5 file, as other tools might write it."""
    with h5py.File(path, "w") as f:
        data = np.zeros(ir_shape)
        if nan:
            data[1, 0, 3] = np.nan
        f.create_dataset("Data.IR", data=data)
        if sample_rate:
            f.create_dataset("Data.SamplingRate", data=np.array([48000.0]))
        if positions is not None:
            f.create_dataset("SourcePosition", data=positions)
            f["SourcePosition"].attrs["Type"] = position_type


def test_spherical_positions_and_broadcast_row(tmp_path):
    path = str(tmp_path / "spherical.sofa")
    spherical = np.array([[90.0, 0.0, 2.0], [0.0, 90.0, 1.0], [180.0, 0.0, 1.5]])
    _hand_made_sofa(path, positions=spherical, position_type=b"spherical")
    rr = read_sofa(path)
    assert rr.position_type == "spherical" and rr.sample_rate == 48000
    np.testing.assert_allclose(rr.cartesian, [[0, 2, 0], [0, 0, 1], [-1.5, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(spherical_to_cartesian([45.0, 30.0, 2.0]),
                               [2 * math.cos(math.radians(30)) / math.sqrt(2)] * 2 + [1.0])
    one_row = str(tmp_path / "one_row.sofa")
    _hand_made_sofa(one_row, positions=np.array([[1.0, 2.0, 0.5]]))
    rr = read_sofa(one_row)
    assert rr.positions.shape == (3, 3)
    np.testing.assert_array_equal(rr.positions, [[1.0, 2.0, 0.5]] * 3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(positions=None), "no SourcePosition"),
    (dict(ir_shape=(3, 2, 16), positions=np.zeros((3, 3))), "2 receivers, expected 4"),
    (dict(positions=np.zeros((3, 3)), sample_rate=False), "sample rate missing"),
    (dict(positions=np.zeros((3, 3)), nan=True), "NaN"),
    (dict(positions=np.zeros((2, 3))), "2 rows"),
])
def test_sofa_errors_name_file_and_problem(tmp_path, kwargs, message):
    path = str(tmp_path / "bad.sofa")
    _hand_made_sofa(path, **kwargs)
    with pytest.raises(SofaError) as info:
        read_sofa(path)
    assert str(info.value).startswith(path) and message in str(info.value)


def test_sofa_not_a_sofa_file_and_missing_file(tmp_path):
    text = tmp_path / "notes.sofa"
    text.write_text("this is not HDF5")
    with pytest.raises(SofaError, match="not a SOFA file") as info:
        read_sofa(str(text))
    assert str(info.value).startswith(str(text))
    empty = str(tmp_path / "empty.sofa")
    with h5py.File(empty, "w"):
        pass
    with pytest.raises(SofaError, match="no Data.IR"):
        read_sofa(empty)
    with pytest.raises(SofaError, match="does not exist"):
        read_sofa(str(tmp_path / "missing.sofa"))
    with pytest.raises(SofaError, match="expected \\(M, 4, N\\)"):
        write_sofa(str(tmp_path / "w.sofa"), np.zeros((2, 3, 8)), np.zeros((2, 3)), SR)


def test_write_sofa_refuses_bad_input_and_keeps_the_old_file(tmp_path):
    irs, positions = _example(m=3)
    path = str(tmp_path / "room.sofa")
    write_sofa(path, irs, positions, SR)
    before = open(path, "rb").read()
    bad_irs = irs.copy()
    bad_irs[1, 2, 5] = np.inf
    bad_positions = positions.copy()
    bad_positions[0, 0] = np.nan
    for kwargs, message in [
            (dict(irs=bad_irs), "NaN or infinite IR samples"),
            (dict(positions=bad_positions), "NaN or infinite source positions"),
            (dict(positions=positions[:2]), "expected (3, 3)"),
            (dict(direct_delay=[1.0, 2.0]), "direct_delay has 2 values, expected 3"),
            (dict(listener_position=np.zeros((2, 3))), "listener_position has shape (2, 3)"),
            (dict(sample_rate=0), "invalid sample rate")]:
        args = dict(irs=irs, positions=positions, sample_rate=SR)
        args.update(kwargs)
        with pytest.raises(SofaError) as info:
            write_sofa(path, **args)
        assert str(info.value).startswith(path) and message in str(info.value)
    assert open(path, "rb").read() == before  # a refused write leaves the file alone
    assert os.listdir(tmp_path) == ["room.sofa"]
    with pytest.raises(SofaError, match="must end in .sofa") as info:
        write_sofa(str(tmp_path / "room.h5"), irs, positions, SR)
    assert str(info.value).startswith(str(tmp_path / "room.h5"))


def test_tiny_bank_rooms_pass_sofar_and_both_readers_agree(bank_root, bank):
    paths = sorted(glob.glob(os.path.join(bank_root, "room_ir", "*", "*.sofa")))
    assert len(paths) >= 2  # train and valid rooms
    for path in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # sofar warns when it fills in a missing entry
            reference = sofar.read_sofa(path, verify=True, verbose=False)
        verify_sofa(path)  # nothing reported, warnings included
        assert reference.GLOBAL_SOFAConventions == "SingleRoomSRIR"
        assert reference.GLOBAL_DatabaseName and reference.GLOBAL_RoomType == "shoebox"
        ours = read_sofa(path)
        assert reference.Data_IR.shape == ours.irs.shape and ours.irs.shape[1] == 4
        # stored as float64 by sofar, yet every value is the float32 the simulator made
        np.testing.assert_array_equal(ours.irs.astype(np.float64), reference.Data_IR)
        np.testing.assert_array_equal(ours.positions, reference.SourcePosition)
        np.testing.assert_array_equal(ours.listener_position, reference.ListenerPosition)
        np.testing.assert_array_equal(ours.direct_delay, reference.DirectPathDelay)
        assert ours.sample_rate == reference.Data_SamplingRate == SR
        assert reference.SourcePosition_Type == ours.position_type == "cartesian"
    for room in bank.rooms:  # the synthesizer's own per-response reader sees the same values
        ours = read_sofa(os.path.join(bank_root, room))
        for index in (0, ours.n_positions - 1):
            np.testing.assert_array_equal(bank.room_ir(room, index, SR), ours.irs[index])


def _sofar_written(path, convention):
    """A room file made by sofar alone (seeded random responses, not through write_sofa)."""
    rng = np.random.default_rng(42)
    m, n = 6, 50
    sofa = sofar.Sofa(convention, mandatory=True)
    sofa.Data_IR = rng.standard_normal((m, 4, n))
    sofa.Data_SamplingRate = 48000.0
    sofa.Data_Delay = np.zeros((1, 4))
    sofa.ReceiverPosition = np.zeros((4, 3, 1)) if convention == "SingleRoomSRIR" else \
        np.zeros((4, 3))
    if convention == "GeneralFIR":  # its default SourcePosition Type is spherical
        sofa.SourcePosition = np.stack([rng.uniform(-180, 180, m), rng.uniform(-90, 90, m),
                                        rng.uniform(0.5, 3.0, m)], axis=1)
    else:
        sofa.GLOBAL_DatabaseName = "made by sofar"
        sofa.SourcePosition = rng.uniform(-3, 3, (m, 3))
        sofa.ListenerPosition = rng.uniform(1, 2, (m, 3))
        sofa.add_variable("RoomCornerA", np.zeros((1, 3)), "double", "IC")
        sofa.add_variable("RoomCornerB", np.array([[5.0, 4.0, 3.0]]), "double", "IC")
    sofar.write_sofa(path, sofa)  # sofar's defaults, zlib compression included
    return sofa


@pytest.mark.parametrize("convention, position_type",
                         [("GeneralFIR", "spherical"), ("SingleRoomSRIR", "cartesian")])
def test_our_reader_reads_a_file_sofar_wrote(tmp_path, convention, position_type):
    path = str(tmp_path / "by_sofar.sofa")
    written = _sofar_written(path, convention)
    with h5py.File(path, "r") as f:
        assert f["Data.IR"].compression == "gzip"  # not the layout write_sofa uses
    ours = read_sofa(path)
    assert ours.irs.dtype == np.float32 and ours.irs.shape == (6, 4, 50)
    np.testing.assert_array_equal(ours.irs, written.Data_IR.astype(np.float32))
    np.testing.assert_array_equal(ours.positions, written.SourcePosition)
    assert ours.position_type == position_type and ours.sample_rate == 48000
    assert ours.direct_delay is None
    expected_listener = np.broadcast_to(written.ListenerPosition, (6, 3))
    np.testing.assert_array_equal(ours.listener_position, expected_listener)
    if position_type == "spherical":
        np.testing.assert_allclose(ours.cartesian, spherical_to_cartesian(written.SourcePosition))
        assert np.all(np.abs(np.linalg.norm(ours.cartesian, axis=1) - written.SourcePosition[:, 2])
                      < 1e-12)
    again = sofar.read_sofa(path, verify=True, verbose=False)
    np.testing.assert_array_equal(ours.irs, again.Data_IR.astype(np.float32))
    assert ours.sample_rate == again.Data_SamplingRate


def test_verify_sofa_names_the_file_and_the_problem(tmp_path):
    irs, positions = _example()
    path = str(tmp_path / "room.sofa")
    write_sofa(path, irs, positions, SR, room_dim=(6, 5, 3))
    verify_sofa(path)
    with h5py.File(path, "r+") as f:  # what the former h5py writer left out
        del f.attrs["DatabaseName"]
    with pytest.raises(SofaError) as info:
        verify_sofa(path)
    assert str(info.value).startswith(path) and "GLOBAL_DatabaseName" in str(info.value)
    read_sofa(path)  # our reader does not need it

    bare = str(tmp_path / "bare.sofa")  # readable by us, not a SOFA file for sofar
    _hand_made_sofa(bare, positions=np.zeros((3, 3)))
    assert read_sofa(bare).n_positions == 3
    with pytest.raises(SofaError, match="sofar cannot read it") as info:
        verify_sofa(bare)
    assert str(info.value).startswith(bare)
    with pytest.raises(SofaError, match="does not exist"):
        verify_sofa(str(tmp_path / "missing.sofa"))
    other_name = str(tmp_path / "room.nc")
    os.rename(bare, other_name)
    with pytest.raises(SofaError, match="ending in .sofa"):
        verify_sofa(other_name)


def test_sofa_command_line_checks_and_times_files(tmp_path, capsys):
    irs, positions = _example()
    good = str(tmp_path / "good.sofa")
    write_sofa(good, irs, positions, SR, room_dim=(6, 5, 3))
    assert sofa_main(["--repeat", "1", good]) == 0
    out = capsys.readouterr().out
    assert f"{good}: passes sofar's convention check" in out
    assert "read_sofa (ours, h5py)" in out and "sofar.SofaStream" in out
    assert "5 positions x 64 samples at 32000 Hz" in out
    bare = str(tmp_path / "bare.sofa")
    _hand_made_sofa(bare, positions=np.zeros((3, 3)))
    assert sofa_main(["--repeat", "1", good, bare]) == 1
    out = capsys.readouterr().out
    assert f"{bare}: sofar cannot read it" in out
    assert out.count("sofar.read_sofa verify=False") == 1  # timed for the good file only


# ------------------------------------------------------------------------------------- rooms


def test_image_source_counts_and_first_order_mirrors():
    room, src = np.array([5.0, 4.0, 3.0]), np.array([1.0, 1.5, 2.0])
    positions, orders = image_sources(room, src, 1)
    assert len(positions) == 7 and sorted(orders.tolist()) == [0] + [1] * 6
    mirrors = {tuple(np.round(p, 6)) for p in positions[orders == 1]}
    assert (-1.0, 1.5, 2.0) in mirrors and (9.0, 1.5, 2.0) in mirrors  # x = 0 and x = 5 walls
    assert (1.0, 1.5, 4.0) in mirrors  # ceiling z = 3
    positions, orders = image_sources(room, src, 2)
    assert len(positions) == 25  # 1 + 6 + 6 + 12


def test_wall_coefficient_matches_eyring():
    room, rt60 = (6.0, 5.0, 3.0), 0.5
    beta = wall_reflection_coefficient(room, rt60)
    volume, surface = 90.0, 2 * (30 + 18 + 15)
    eyring = 24 * math.log(10) / SPEED_OF_SOUND * volume / (-surface * math.log(beta ** 2))
    assert 0 < beta < 1 and eyring == pytest.approx(rt60, rel=1e-9)
    assert wall_reflection_coefficient(room, 1.0) > beta  # more reverberant -> more reflective


def test_direct_path_delay_and_foa_encoding():
    room, mic = (10.0, 9.0, 6.0), np.array([5.0, 4.5, 3.0])
    for az_deg, el_deg, dist in [(60.0, 20.0, 2.0), (-135.0, -30.0, 1.3), (180.0, 0.0, 2.7)]:
        az, el = math.radians(az_deg), math.radians(el_deg)
        src = mic + dist * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az),
                                     math.sin(el)])
        ir, delay = simulate_foa_rir(room, src, mic, SR, rt60=0.4, length=8000)
        assert ir.shape == (4, 8000) and ir.dtype == np.float32
        assert delay == pytest.approx(dist / SPEED_OF_SOUND * SR, rel=1e-12)
        assert abs(int(np.argmax(np.abs(ir[0]))) - delay) <= 1.0
        window = ir[:, int(delay) - 2:int(delay) + 4].astype(np.float64)
        ratios = window @ window[0] / (window[0] @ window[0])
        np.testing.assert_allclose(ratios, foa_encode(az, el), atol=0.02)
        # direct-path amplitude ~ 1/r (band-limited impulse: sum of the kernel ~ 1)
        assert np.sum(window[0]) == pytest.approx(1.0 / dist, rel=0.1)


def _schroeder_rt60(signal, sr):
    energy = np.cumsum(signal[::-1].astype(np.float64) ** 2)[::-1]
    decay_db = 10 * np.log10(energy / energy[0] + 1e-30)
    i5, i25 = np.argmax(decay_db < -5), np.argmax(decay_db < -25)
    slope = np.polyfit(np.arange(i5, i25) / sr, decay_db[i5:i25], 1)[0]
    return -60.0 / slope


@pytest.mark.parametrize("rt60, room", [(0.3, (6.0, 5.0, 3.0)), (0.6, (8.0, 6.5, 3.4))])
def test_rt60_of_simulated_room(rt60, room):
    mic = np.array(room) / 2
    src = mic + np.array([1.5, 0.8, -0.4])
    ir, _ = simulate_foa_rir(room, src, mic, SR, rt60=rt60, length=int(2 * rt60 * SR),
                             rng=np.random.default_rng(1))
    assert _schroeder_rt60(ir[0], SR) == pytest.approx(rt60, rel=0.2)
    late = ir[:, int(1.2 * rt60 * SR):].astype(np.float64)
    share = np.mean(late[1:] ** 2, axis=1) / np.mean(late[0] ** 2)
    assert np.all((share > 0.2) & (share < 0.5))  # diffuse field: 1/3 of W in each of Y, Z, X


def test_simulate_rejects_bad_geometry():
    with pytest.raises(ValueError, match="outside the room"):
        simulate_foa_rir((4, 4, 3), (5, 1, 1), (2, 2, 1.5))
    with pytest.raises(ValueError, match="rt60"):
        simulate_foa_rir((4, 4, 3), (1, 1, 1), (2, 2, 1.5), rt60=0)


def test_make_room_positions_and_determinism():
    room = (7.0, 6.0, 3.2)
    result = make_room(np.random.default_rng(5), room, 12, SR, 0.35, 4000)
    again = make_room(np.random.default_rng(5), room, 12, SR, 0.35, 4000)
    np.testing.assert_array_equal(result["irs"], again["irs"])
    assert result["irs"].shape == (12, 4, 4000)
    distances = np.linalg.norm(result["positions"], axis=1)
    assert np.all((distances > 0.99) & (distances < 3.01))
    absolute = result["positions"] + result["listener_position"]
    assert np.all((absolute > 0) & (absolute < np.array(room)))
    np.testing.assert_allclose(result["direct_delay"], distances / SPEED_OF_SOUND * SR)
    peaks = np.argmax(np.abs(result["irs"][:, 0]), axis=1)
    assert np.all(np.abs(peaks - result["direct_delay"]) <= 1)
    assert len(np.unique(np.round(result["positions"][:, 2], 3))) >= 2  # several heights
    with pytest.raises(ValueError, match="too small"):
        make_room(np.random.default_rng(0), (2.2, 2.2, 2.5), 40, SR, 0.3, 2000)
