"""The CLI picks the music decoder: AudioLDM2 writes 16 kHz, MusicGen 32 kHz, both the asked length."""
import pytest
import soundfile as sf

import inference


@pytest.mark.parametrize("decoder, rate", [("audioldm2", 16000), ("musicgen", 32000)])
def test_music_decoder_choice_sets_rate_and_length(tiny_bundle, tmp_path, capsys, decoder, rate):
    out = tmp_path / f"{decoder}.wav"
    rc = inference.main(["--ckpt-dir", str(tiny_bundle), "--music-decoder", decoder, "--music",
                         "--duration", "1", "--max-new-tokens", "4", "--prompt", "Write calm piano music.",
                         "--output", str(out)])
    assert rc == 0, capsys.readouterr().err
    audio, sr = sf.read(out)
    assert (sr, audio.shape) == (rate, (rate,))
    assert abs(audio).max() > 0
    assert f"at {rate} Hz" in capsys.readouterr().out
