"""Tiny random evaluation models, written in the real on-disk formats (transformers folders with
safetensors), so the metric code is exercised through `from_pretrained` without a model hub.

    python -m llama.metrics.tiny_models OUT_DIR     -> OUT_DIR/{bert,clap,ast,hubert}

Same seed -> same weights. Random weights give meaningless numbers; these exist so tests and
smoke runs load models exactly as real ones (roberta-large, laion/clap-htsat, AST, MERT) are.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

# A small WordPiece vocabulary: enough English for captions and answers about music.
_WORDS = """the a an is it and of in on at to with without for this that music piece song tune
played playing plays solo fast slow moderate tempo pace key major minor drums no instrument
piano guitar violin flute cello trumpet organ harp bass synthesizer choir calm tense happy sad
bright dark energetic gentle mood sounds sound here picture video image fits what which how
generate compose describe melody rhythm beat bpm c d e f g b sharp flat""".split()
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_PIECES = [".", ",", ";", ":", "'", "!", "?", "-", *[str(i) for i in range(10)],
           *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"], *list("abcdefghijklmnopqrstuvwxyz")]
WIDTH = 32


@contextlib.contextmanager
def _seeded(seed: int):
    """transformers initialises from the global RNG: seed it without leaking the state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def write_tokenizer(folder: Path) -> Path:
    """A BERT WordPiece tokenizer (vocab.txt) saved with its config."""
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = list(dict.fromkeys(_SPECIALS + _PIECES + _WORDS))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(str(folder / "vocab.txt"), model_max_length=128)
    tok.save_pretrained(folder)
    return folder


def write_bert(folder: str | Path, seed: int = 0) -> Path:
    """A 2-layer BERT for BERTScore (use --bert-layers 2 or fewer)."""
    from transformers import BertConfig, BertModel

    folder = write_tokenizer(Path(folder))
    n_vocab = len((folder / "vocab.txt").read_text().split())
    conf = BertConfig(vocab_size=n_vocab, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=2 * WIDTH, max_position_embeddings=128)
    with _seeded(seed):
        BertModel(conf).save_pretrained(folder)
    return folder


def write_clap(folder: str | Path, seed: int = 0, sampling_rate: int = 16000) -> Path:
    """A CLAP (HTSAT audio tower + BERT-vocab text tower) with a matching feature extractor.

    The real one (laion/clap-htsat-unfused) takes 48 kHz, 64 mels, 10 s; this one 16 kHz, 16 mels,
    1 s (51 frames, within the 64 x 16 the 32-wide HTSAT takes), so it runs in milliseconds."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    folder = write_tokenizer(Path(folder))
    n_vocab = len((folder / "vocab.txt").read_text().split())
    text = dict(vocab_size=n_vocab, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=2 * WIDTH, max_position_embeddings=130, projection_dim=16)
    audio = dict(spec_size=32, num_mel_bins=16, window_size=4, patch_size=4, patch_stride=(4, 4),
                 depths=(1, 1), num_attention_heads=(2, 2), hidden_size=2 * WIDTH,
                 patch_embeds_hidden_size=WIDTH, projection_dim=16, num_classes=8)
    conf = ClapConfig(text_config=text, audio_config=audio, projection_dim=16)
    with _seeded(seed):
        ClapModel(conf).save_pretrained(folder)
    hop = sampling_rate // 50
    ClapFeatureExtractor(feature_size=16, sampling_rate=sampling_rate, hop_length=hop, max_length_s=1,
                         fft_window_size=4 * hop, frequency_max=sampling_rate // 2,
                         truncation="rand_trunc", padding="repeatpad").save_pretrained(folder)
    return folder


def write_ast(folder: str | Path, seed: int = 0, labels: tuple[str, ...] = ("a", "b", "c", "d", "e", "f")) -> Path:
    """An Audio Spectrogram Transformer classifier (16 kHz, 32 mels, 64 frames)."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    folder = Path(folder)
    conf = ASTConfig(hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=2, intermediate_size=2 * WIDTH,
                     patch_size=16, frequency_stride=8, time_stride=8, max_length=64, num_mel_bins=32,
                     id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    with _seeded(seed):
        ASTForAudioClassification(conf).save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=32, max_length=64, sampling_rate=16000).save_pretrained(folder)
    return folder


def write_hubert(folder: str | Path, seed: int = 0, sampling_rate: int = 24000) -> Path:
    """A HuBERT encoder shaped like MERT (an `AutoModel` audio encoder for FAD)."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    folder = Path(folder)
    conf = HubertConfig(hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=2, intermediate_size=2 * WIDTH,
                        conv_dim=(16,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                        feat_extract_norm="layer", do_stable_layer_norm=True,
                        num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4)
    with _seeded(seed):
        HubertModel(conf).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=sampling_rate, padding_value=0.0,
                             do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    return folder


def write_all(out: str | Path, seed: int = 0) -> dict[str, Path]:
    out = Path(out)
    return {"bert": write_bert(out / "bert", seed), "clap": write_clap(out / "clap", seed + 1),
            "ast": write_ast(out / "ast", seed + 2), "hubert": write_hubert(out / "hubert", seed + 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llama.metrics.tiny_models", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for name, path in write_all(args.out_dir, args.seed).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
