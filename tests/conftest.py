"""Fixtures shared by the test modules."""
import pytest

from s5lib.data.synth import SoundBank


@pytest.fixture(scope="session")
def bank_root(tmp_path_factory):
    """A tiny embedded soundbank (dev_set layout), built once per test session. Read-only:
    a test that changes files copies it first."""
    from s5lib.data.soundbank import build_mini_soundbank
    root = str(tmp_path_factory.mktemp("bank") / "dev_set")
    build_mini_soundbank(root, seed=3, size="tiny")
    return root


@pytest.fixture(scope="session")
def bank(bank_root):
    return SoundBank(bank_root, "train", cache_audio=True)
