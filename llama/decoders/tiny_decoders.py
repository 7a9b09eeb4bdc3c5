"""Random-weight MusicGen/AudioLDM2 folders in the real formats, for the offline bundle.

`build_tiny_musicgen` writes a transformers `MusicgenForConditionalGeneration` folder and
`build_tiny_audioldm2` a diffusers `AudioLDM2Pipeline` folder, each with its `mumu_decoder.json`,
in seconds and with tiny widths, so the real loaders (`MusicGenDecoder`, `AudioLDM2Decoder`) run
end to end without a model hub. Same seed -> same bytes.
"""
from __future__ import annotations

import json
import math
import random
import tempfile
from pathlib import Path

import torch

from . import audioldm2, musicgen
from .audioldm2 import N_GPT2_TOKENS

# ------------------------------------------------------------------------------ tokenizers

# the music vocabulary both tiny tokenizers are built from
_WORDS = ("music song piano guitar drums bass violin cello flute organ choir voice jazz rock pop "
          "blues funk metal reggae calm upbeat slow fast happy sad melody rhythm beat groove synth "
          "ambient electronic classical folk loud soft bright dark warm dreamy energetic gentle "
          "a the with and of in an on track playing by over under some 0 1 2 3 4 5 6 7 8 9 bpm").split()
# the whole words CLAP's RoBERTa BPE gets merges for: the same list, less a few words and the digits
_CLAP_WORDS = [w for w in _WORDS
               if w not in {"reggae", "groove", "dreamy", "energetic", "over", "under"} and not w.isdigit()]


def _train_tiny_spm(path: Path, seed: int, vocab_size: int = 96) -> None:
    """A tiny sentencepiece unigram model in T5's id layout (<pad>=0, </s>=1, <unk>=2)."""
    import sentencepiece as spm

    rng = random.Random(seed)
    lines = [" ".join(rng.choice(_WORDS) for _ in range(8)) for _ in range(400)]
    lines.append(" ".join("abcdefghijklmnopqrstuvwxyz,.-'"))   # cover every plain character
    with open(path, "wb") as f:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=f, vocab_size=vocab_size,
            model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1,
            character_coverage=1.0, hard_vocab_limit=False, minloglevel=2)


def _tiny_t5_tokenizer(seed: int, model_max_length: int):
    """A T5Tokenizer over `_train_tiny_spm`'s model (no extra ids)."""
    from transformers import T5Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        _train_tiny_spm(Path(tmp) / "spiece.model", seed)
        return T5Tokenizer.from_pretrained(tmp, extra_ids=0, model_max_length=model_max_length,
                                           local_files_only=True)


def _byte_alphabet() -> list[str]:
    """GPT-2's byte -> printable character table (what RoBERTa's byte-level BPE is built on)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    table = dict(zip(keep + extra, keep + [256 + i for i in range(len(extra))]))
    return [chr(table[b]) for b in range(256)]


def _tiny_roberta_tokenizer(model_max_length: int):
    """A byte-level BPE in RoBERTa's layout (<s>=0, <pad>=1, </s>=2, <unk>=3, <mask> last), with
    merges written out by hand: every byte, plus whole-word tokens for a small music vocabulary."""
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in _byte_alphabet():
        vocab.setdefault(ch, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in _CLAP_WORDS:
        for start in ("Ġ" + word[0], word[0]):          # after a space, and at the very start
            if start not in vocab:
                merges.append(("Ġ", word[0]))
                vocab[start] = len(vocab)
            tok = start
            for ch in word[1:]:
                if (tok, ch) not in merges:
                    merges.append((tok, ch))
                tok += ch
                vocab.setdefault(tok, len(vocab))
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


# ------------------------------------------------------------------------------ MusicGen

TINY_CODEBOOKS, TINY_CODEBOOK_SIZE, TINY_CODEC_RATE = 2, 64, 32000
TINY_CODEC_RATIOS = [8, 5, 4, 4]          # the real hop: 640 samples, 50 frames/s at 32 kHz


def _tiny_text_and_codec(vocab_size: int, cond_dim: int, num_filters: int = 4, hidden_size: int = 16,
                         n_codebooks: int = TINY_CODEBOOKS, codebook_size: int = TINY_CODEBOOK_SIZE):
    """(T5 config, EnCodec config) shared by the tiny MusicGen and MusicGen-Melody folders.

    The keywords widen the codec (the world-trained stand-in, DataSet/synth/standins_decoder.py);
    the defaults are the tiny preset's (same bytes)."""
    from transformers import EncodecConfig, T5Config

    frame_rate = math.ceil(TINY_CODEC_RATE / math.prod(TINY_CODEC_RATIOS))
    text = T5Config(vocab_size=vocab_size, d_model=cond_dim, d_kv=16, d_ff=2 * cond_dim,
                    num_layers=1, num_heads=2, relative_attention_num_buckets=8,
                    dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    audio = EncodecConfig(
        sampling_rate=TINY_CODEC_RATE, audio_channels=1, hidden_size=hidden_size, num_filters=num_filters,
        upsampling_ratios=TINY_CODEC_RATIOS, num_residual_layers=1, num_lstm_layers=1,
        codebook_size=codebook_size, codebook_dim=hidden_size,
        # num_quantizers = 1000 * bandwidth // (frame_rate * bits per code) = n_codebooks
        target_bandwidths=[n_codebooks * frame_rate * math.log2(codebook_size) / 1000],
        normalize=False, use_causal_conv=False, use_conv_shortcut=False,
        chunk_length_s=None, overlap=None)
    return text, audio


def build_tiny_musicgen(folder: str | Path, cond_dim: int, seed: int = 0,
                        n_cond_tokens: int = 16) -> Path:
    """Write a random-weight MusicGen in the real on-disk format (seconds, deterministic per seed).

    T5 width = cond_dim (what the projector must emit); EnCodec at 32 kHz with the real hop of
    640 samples (50 frames/s) but tiny widths; a 2-layer, 48-wide, 2-codebook decoder over 64 codes.
    """
    from transformers import (EncodecFeatureExtractor, GenerationConfig, MusicgenConfig,
                              MusicgenDecoderConfig, MusicgenForConditionalGeneration,
                              MusicgenProcessor)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_t5_tokenizer(seed, 512)
    text, audio = _tiny_text_and_codec(len(tokenizer), cond_dim)
    n_codebooks, codebook_size, sr = TINY_CODEBOOKS, TINY_CODEBOOK_SIZE, TINY_CODEC_RATE
    # decoder width != cond_dim so that enc_to_dec_proj exists, as in the real one (768 -> 1024);
    # initializer_factor 0.2 (real: 0.02) so that random weights give peaked, condition-dependent
    # logits rather than near-uniform ones
    width = 48 if cond_dim != 48 else 32
    decoder = MusicgenDecoderConfig(
        vocab_size=codebook_size, hidden_size=width, num_hidden_layers=2, num_attention_heads=2,
        ffn_dim=64, num_codebooks=n_codebooks, max_position_embeddings=2048, dropout=0.0,
        initializer_factor=0.2, pad_token_id=codebook_size, bos_token_id=codebook_size)
    config = MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder,
                            decoder_start_token_id=codebook_size, pad_token_id=codebook_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MusicgenForConditionalGeneration(config).eval()
        # EnCodec initialises its codebooks to zeros (real ones are learned): every code would
        # decode to the same sound, so give each code its own random vector
        for layer in model.audio_encoder.quantizer.layers:
            book = layer.codebook
            book.embed.copy_(torch.randn_like(book.embed))
            book.embed_avg.copy_(book.embed)
            book.cluster_size.fill_(1.0)
    model.generation_config = GenerationConfig(
        do_sample=True, guidance_scale=3.0, max_length=1500, bos_token_id=codebook_size,
        decoder_start_token_id=codebook_size, pad_token_id=codebook_size)
    model.save_pretrained(folder)
    processor = MusicgenProcessor(
        feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=sr, padding_value=0.0),
        tokenizer=tokenizer)
    processor.save_pretrained(folder)
    (folder / musicgen.META_FILE).write_text(json.dumps({"n_cond_tokens": n_cond_tokens}) + "\n")
    return folder


def write_melody_preprocessor(folder: Path, sampling_rate: int) -> None:
    """MusicgenMelodyFeatureExtractor's preprocessor_config.json with the real hop and FFT,
    written by hand: instantiating that extractor needs torchaudio."""
    (Path(folder) / "preprocessor_config.json").write_text(json.dumps({
        "feature_extractor_type": "MusicgenMelodyFeatureExtractor", "processor_class": "MusicgenMelodyProcessor",
        "feature_size": 12, "sampling_rate": sampling_rate, "hop_length": 4096, "chunk_length": 30,
        "n_fft": 16384, "num_chroma": 12, "padding_value": 0.0, "padding_side": "right",
        "return_attention_mask": False, "stem_indices": [3, 2]}, indent=2) + "\n")


def build_tiny_musicgen_melody(folder: str | Path, cond_dim: int, seed: int = 0,
                               n_cond_tokens: int = 16, chroma_length: int = 32) -> Path:
    """Write a random-weight MusicGen-Melody (transformers `MusicgenMelodyForConditionalGeneration`,
    config model_type "musicgen_melody") in the real on-disk format: safetensors weights, the T5
    tokenizer, a preprocessor_config.json for MusicgenMelodyFeatureExtractor (real hop and FFT)
    and mumu_decoder.json. Widths as `build_tiny_musicgen`; `chroma_length` frames of chroma
    prefix (real: 235, 30 s). Same seed -> same bytes."""
    from transformers import (GenerationConfig, MusicgenMelodyConfig, MusicgenMelodyDecoderConfig,
                              MusicgenMelodyForConditionalGeneration)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_t5_tokenizer(seed, 512)
    text, audio = _tiny_text_and_codec(len(tokenizer), cond_dim)
    n_codebooks, codebook_size, sr = TINY_CODEBOOKS, TINY_CODEBOOK_SIZE, TINY_CODEC_RATE
    width = 48 if cond_dim != 48 else 32          # != cond_dim and != 12: both projections exist
    decoder = MusicgenMelodyDecoderConfig(
        vocab_size=codebook_size, hidden_size=width, num_hidden_layers=2, num_attention_heads=2,
        ffn_dim=64, num_codebooks=n_codebooks, max_position_embeddings=2048, dropout=0.0,
        initializer_factor=0.2, pad_token_id=codebook_size, bos_token_id=codebook_size)
    config = MusicgenMelodyConfig(text_encoder=text, audio_encoder=audio, decoder=decoder,
                                  num_chroma=12, chroma_length=chroma_length,
                                  decoder_start_token_id=codebook_size, pad_token_id=codebook_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MusicgenMelodyForConditionalGeneration(config).eval()
        for layer in model.audio_encoder.quantizer.layers:     # distinct codes, as in build_tiny_musicgen
            book = layer.codebook
            book.embed.copy_(torch.randn_like(book.embed))
            book.embed_avg.copy_(book.embed)
            book.cluster_size.fill_(1.0)
        # the chroma projection at the tiny model's scale, so that the melody visibly steers it
        torch.nn.init.normal_(model.audio_enc_to_dec_proj.weight, std=1.0)
    model.generation_config = GenerationConfig(
        do_sample=True, guidance_scale=3.0, max_length=1500, bos_token_id=codebook_size,
        decoder_start_token_id=codebook_size, pad_token_id=codebook_size)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    write_melody_preprocessor(folder, sr)
    (folder / musicgen.META_FILE).write_text(json.dumps({"n_cond_tokens": n_cond_tokens}) + "\n")
    return folder


# ------------------------------------------------------------------------------ AudioLDM2

def build_tiny_audioldm2(folder: str | Path, t5_dim: int = 32, gpt2_dim: int = 32,
                         n_t5_tokens: int = 16, seed: int = 0, unet_channels=(16, 32),
                         layers_per_block: int = 1, mel_bins: int = 16,
                         default_steps: int | None = 10) -> Path:
    """Write a random-weight AudioLDM2 pipeline in the real on-disk format (seconds; same seed,
    same bytes). Real geometry where it sets the output (16 kHz, 160-sample hop, 8 latent
    channels, VAE downsampling 4), tiny widths elsewhere. `unet_channels`, `layers_per_block` and
    `mel_bins` (real: 64) make bigger ones for benchmarks. `default_steps` goes into
    mumu_decoder.json (None: leave it out).
    """
    from diffusers import AudioLDM2Pipeline, AutoencoderKL, DDIMScheduler
    from diffusers.pipelines.audioldm2 import AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel
    from transformers import (ClapConfig, ClapFeatureExtractor, ClapModel, GPT2Config,
                              GPT2LMHeadModel, SpeechT5HifiGan, SpeechT5HifiGanConfig, T5Config,
                              T5EncoderModel)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clap_len, clap_dim = 32, 32                          # real: 512 tokens, 512 wide
    tokenizer = _tiny_roberta_tokenizer(clap_len)
    tokenizer_2 = _tiny_t5_tokenizer(seed, n_t5_tokens)  # T5 truncates where the projector does
    clap = ClapConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64, projection_dim=clap_dim,
                         max_position_embeddings=clap_len + 2, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0),
        audio_config=dict(num_mel_bins=16, spec_size=64, window_size=4, patch_size=4,
                          patch_stride=(4, 4), depths=(1, 1), num_attention_heads=(2, 2),
                          patch_embeds_hidden_size=16, hidden_size=32, projection_dim=clap_dim,
                          num_classes=4, hidden_dropout_prob=0.0),
        projection_dim=clap_dim)
    # unfused CLAP (as laion/clap-htsat-unfused): one mel channel, "rand_trunc"; 2 s fill the
    # 64 x 4 = 256 frames its spectrogram image holds
    feature_extractor = ClapFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160,
                                             max_length_s=2, fft_window_size=512, frequency_max=8000,
                                             truncation="rand_trunc")
    t5 = T5Config(vocab_size=len(tokenizer_2), d_model=t5_dim, d_kv=16, d_ff=2 * t5_dim,
                  num_layers=1, num_heads=2, relative_attention_num_buckets=8, dropout_rate=0.0,
                  pad_token_id=0, eos_token_id=1, is_encoder_decoder=False)
    gpt2 = GPT2Config(vocab_size=64, n_positions=clap_len + n_t5_tokens + 4 + N_GPT2_TOKENS + 8,
                      n_embd=gpt2_dim, n_layer=1, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0,
                      attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    gpt2.max_new_tokens = N_GPT2_TOKENS                  # as in the real language_model/config.json
    vocoder = SpeechT5HifiGanConfig(
        model_in_dim=mel_bins, sampling_rate=16000, upsample_initial_channel=32,
        upsample_rates=[5, 4, 2, 2, 2], upsample_kernel_sizes=[16, 16, 8, 4, 4],
        resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], normalize_before=False,
        initializer_range=0.2)   # real: 0.01, which in a 32-wide random net gives ~1e-10 output
    n_blocks = len(unet_channels)
    cross = [[None, gpt2_dim, t5_dim]] * n_blocks       # self-attn, GPT-2 states, T5 states
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = AudioLDM2Pipeline(
            vae=AutoencoderKL(in_channels=1, out_channels=1, latent_channels=8,
                              down_block_types=["DownEncoderBlock2D"] * 3,
                              up_block_types=["UpDecoderBlock2D"] * 3, block_out_channels=[8, 16, 16],
                              layers_per_block=1, norm_num_groups=4, sample_size=64,
                              scaling_factor=0.4342),
            text_encoder=ClapModel(clap).eval(),
            text_encoder_2=T5EncoderModel(t5).eval(),
            projection_model=AudioLDM2ProjectionModel(text_encoder_dim=clap_dim,
                                                      text_encoder_1_dim=t5_dim,
                                                      langauge_model_dim=gpt2_dim),
            language_model=GPT2LMHeadModel(gpt2).eval(),
            tokenizer=tokenizer, tokenizer_2=tokenizer_2, feature_extractor=feature_extractor,
            unet=AudioLDM2UNet2DConditionModel(
                sample_size=64, in_channels=8, out_channels=8,
                down_block_types=["DownBlock2D"] + ["CrossAttnDownBlock2D"] * (n_blocks - 1),
                up_block_types=["CrossAttnUpBlock2D"] * (n_blocks - 1) + ["UpBlock2D"],
                block_out_channels=list(unet_channels), layers_per_block=layers_per_block,
                attention_head_dim=2, norm_num_groups=8, cross_attention_dim=cross),
            scheduler=DDIMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195,
                                    beta_schedule="scaled_linear", clip_sample=False,
                                    set_alpha_to_one=False, steps_offset=1),
            vocoder=SpeechT5HifiGan(vocoder).eval(),
        )
    pipe.save_pretrained(folder)
    meta = {"n_t5_tokens": n_t5_tokens}
    if default_steps is not None:
        meta["num_inference_steps"] = default_steps
    (folder / audioldm2.META_FILE).write_text(json.dumps(meta) + "\n")
    return folder
