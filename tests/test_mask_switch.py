"""``model.mask_type: mag_phase | real_imag | complex`` (SPEC 7.5) is one switch of the shared
masking U-Net (``MaskingUNetBase``), so it works in every ResUNet-style separator of the recipes:
egs/baseline (resunet, resunetk), egs/redux (resunext, resunextk), egs/cpjku (audiosep_sed) and
egs/srpol (lass). For each model and mode, identity masks (every mask passing the mixture
unchanged, the channel mix picking channel 0) must give back channel 0 of the mixture (less the
Nyquist bin, which the U-Net never sees), and each mode must read its own input features."""
import pytest
import torch

from s5lib import constants
from s5lib.models.factory import build_separator
from s5lib.models.lass import build_lass_separator

from test_audiosep_sed import TINY_SED, TINY_UNET as CPJKU_UNET
from test_resunext import TINY as REDUX
from test_resunet import set_identity_masks

N_FFT, HOP = 256, 128
TINY_RESUNET = {"channels": [4, 4, 8, 8, 8, 8], "bottleneck_channels": 8, "condition_size": 16,
                "n_fft": N_FFT, "hop_length": HOP}
MODELS = {
    "resunet": dict(type="resunet", **TINY_RESUNET),
    "resunetk": dict(type="resunetk", **TINY_RESUNET),
    "resunext": dict(REDUX, type="resunext", n_fft=N_FFT, hop_length=HOP),
    "resunextk": dict(REDUX, type="resunextk", n_fft=N_FFT, hop_length=HOP),
    "audiosep_sed": dict(CPJKU_UNET, type="audiosep_sed", sed=TINY_SED, dprnn_hidden=4,
                         n_fft=N_FFT, hop_length=HOP),
}


def query_for(model, batch):
    length = model.config.label_len
    query = torch.zeros(batch, length)
    for b in range(batch):
        for part in range(model.config.num_slots):
            query[b, part * (length // model.config.num_slots) + b] = 1.0
    return query


def channel_zero_without_nyquist(mixture):
    window = torch.hann_window(N_FFT)
    spec = torch.stft(mixture[:, 0], N_FFT, HOP, window=window, return_complex=True)
    spec[:, -1, :] = 0
    return torch.istft(spec, N_FFT, HOP, window=window, length=mixture.shape[-1])


@pytest.mark.parametrize("mask_type", ["mag_phase", "real_imag", "complex"])
@pytest.mark.parametrize("name", sorted(MODELS) + ["lass"])
def test_identity_masks_give_back_the_mixture(name, mask_type):
    torch.manual_seed(0)
    if name == "lass":
        model = build_lass_separator(dict(channels=[4, 4, 8, 8, 8, 8], bottleneck_channels=8,
                                          n_fft=N_FFT, hop_length=HOP, mask_type=mask_type), 16)
        mixture = 0.1 * torch.randn(2, 1, 6400)
    else:
        model = build_separator(dict(MODELS[name], mask_type=mask_type))
        mixture = 0.1 * torch.randn(2, constants.N_FOA_CHANNELS, 6400)
    assert model.config.mask_type == mask_type
    assert model.config.input_features == ("magnitude" if mask_type == "mag_phase" else "real_imag")
    set_identity_masks(model)
    model.eval()
    query = (torch.nn.functional.normalize(torch.randn(2, 16), dim=1) if name == "lass"
             else query_for(model, 2))
    with torch.no_grad():
        out = model(mixture, query)
    out = out.reshape(2, -1, mixture.shape[-1])
    reference = channel_zero_without_nyquist(mixture)
    for slot in range(out.shape[1]):
        assert torch.allclose(out[:, slot], reference, atol=1e-4), (name, mask_type, slot)


@pytest.mark.parametrize("mask_type", ["mag_phase", "real_imag", "complex"])
def test_each_mode_reads_its_own_features(mask_type):
    """real_imag / complex read Re and Im (2 feature maps per channel), mag_phase the magnitude."""
    model = build_separator(dict(MODELS["resunetk"], mask_type=mask_type))
    spec, features = model.base.analyse(0.1 * torch.randn(1, 4, 3200))
    per_channel = 1 if mask_type == "mag_phase" else 2
    assert features.shape[1] == 4 * per_channel
    assert model.base.after_conv.out_channels == 3 * 4 * {"mag_phase": 3}.get(mask_type, 2)
