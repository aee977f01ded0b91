"""Async Engine: a self-hosted English speech-to-text server (Whisper, split inference/decoding)."""

from setuptools import find_packages, setup

setup(
    name="async-engine",
    version="0.1.0",
    description="Self-hosted English speech-to-text server",
    python_requires=">=3.10",
    packages=find_packages(include=["engine", "engine.*", "daemon", "daemon.*"]),
    install_requires=[
        "torch==2.13.0",
        "numpy>=1.24",
        "soundfile>=0.12.1",
        "soxr>=0.3",
        "silero-vad>=6.2.3",
        "onnxruntime>=1.17",
        "tokenizers>=0.15",
        "tqdm>=4.60",
        "requests>=2.31",
        "falcon>=4",
        "waitress>=3",
        "text2num>=3.1,<4",
        "num2words>=0.5.14,<0.6",
        "redis>=5.0",
        "prometheus-client>=0.20",
        "kenlm>=0.2",
        "rapidfuzz>=3.0",
        "pydantic>=2.7,<3",
        "scipy>=1.10",
        "websockets>=13,<18",
    ],
    entry_points={"console_scripts": ["async-engine=daemon.cli:main"]},
)
