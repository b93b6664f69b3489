"""Self-check: load a model, encode an audio file, print the runtime, the dims and a logit check.

Usage: python -m mlxbatchwhisper.check [AUDIO] [--model NAME_OR_PATH]
"""

from __future__ import annotations

import argparse
import json

import mlx.core as mx

from . import load_model, runtime_info
from .audio import load_audio, log_mel_spectrogram
from .tokenizer import get_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", nargs="?", default="examples/sample.flac")
    parser.add_argument("--model", default="tiny.en")
    args = parser.parse_args()
    print(json.dumps(runtime_info()))
    model = load_model(args.model)
    print(model.dims)
    tok = get_tokenizer(model.is_multilingual, model.num_languages)
    mel, _ = log_mel_spectrogram([load_audio(args.audio)[:480000]], model.dims.n_mels)
    prompt = list(tok.sot_sequence("en")) + [tok.no_timestamps]
    logits = model.logits(mx.array([prompt]), model.embed_audio(mel))[0, -1]
    probs = mx.softmax(logits)
    top = mx.argsort(-logits)[:5].tolist()
    print("most likely first tokens:", ", ".join(f"{tok.decode([t])!r} {probs[t].item():.3f}" for t in top))


if __name__ == "__main__":
    main()
