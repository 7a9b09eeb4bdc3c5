import pytest

from llama.tiny import write_tokenizer
from llama.tokenizer import Tokenizer, format_prompt


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return Tokenizer(write_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.model", 512))


def test_aud_tokens_are_single_ids_after_the_base_vocabulary(tok):
    assert tok.aud_ids == list(range(512, 520)) and tok.vocab_size == 520
    ids = tok.encode("play [AUD0][AUD1][AUD2][AUD3][AUD4][AUD5][AUD6][AUD7]", bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert ids[-9:-1] == tok.aud_ids
    assert tok.decode(ids, skip_aud=False) == "play [AUD0][AUD1][AUD2][AUD3][AUD4][AUD5][AUD6][AUD7]"
    assert tok.decode(ids) == "play "


def test_round_trip_of_a_prompt_with_unicode(tok):
    text = format_prompt("Describe the music: café, 120 BPM, ♪")
    assert tok.decode(tok.encode(text)) == text


def test_a_missing_or_bad_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        Tokenizer(tmp_path / "tokenizer.model")
    bad = tmp_path / "bad.model"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="bad.model"):
        Tokenizer(bad)
