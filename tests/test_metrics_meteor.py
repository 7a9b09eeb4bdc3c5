"""METEOR through a local WordNet folder; unavailable (with the reason) without one."""
import pytest

from llama.errors import UserError
from llama.metrics import wordnet as W
from llama.metrics.text import meteor, tokens


def test_lexnames_table_is_the_wordnet_3_format():
    lines = W.lexnames_text().splitlines()
    assert len(lines) == 45
    first, last = lines[0].split("\t"), lines[-1].split("\t")
    assert first == ["00", "adj.all", "3"] and last == ["44", "adj.ppl", "3"]
    assert all(line.split("\t")[0] == f"{i:02d}" for i, line in enumerate(lines))


def test_a_folder_that_is_not_wordnet_is_a_user_error(tmp_path):
    (tmp_path / "data.noun").write_text("x")
    with pytest.raises(UserError, match=f"--wordnet-dir {tmp_path}: not a WordNet 3.0 dict folder"):
        W.find_wordnet(tmp_path)


def test_no_wordnet_anywhere_is_reported_unavailable(monkeypatch, tmp_path):
    monkeypatch.setattr(W, "DEBIAN_WORDNET", tmp_path / "none")
    monkeypatch.setattr(W, "_nltk_folder", lambda: None)
    with pytest.raises(W.WordNetUnavailable, match="no WordNet data found"):
        W.find_wordnet(None)


@pytest.fixture(scope="module")
def wordnet():
    try:
        W.find_wordnet(None)
    except W.WordNetUnavailable as e:
        pytest.skip(f"{e} (Debian: apt-get install wordnet-base)")
    return W.open_wordnet(None)


def test_meteor_equals_nltk_and_uses_synonyms(wordnet):
    from nltk.translate.meteor_score import meteor_score

    hyps = ["a quick dog runs home", "the tempo is slow", "it is in g minor"]
    refs = [["a fast hound ran home"], ["the tempo is slow"], ["the key is g minor"]]
    lib = sum(meteor_score([tokens(r[0])], tokens(h), wordnet=wordnet) for h, r in zip(hyps, refs)) / 3
    assert meteor(hyps, refs, wordnet) == pytest.approx(lib, abs=1e-12)
    # 'quick' ~ 'fast' and 'dog' ~ 'hound' are WordNet synonyms: they raise the score
    exact_only = meteor_score([tokens("a fast hound ran home")], tokens("a quick dog runs home"),
                              wordnet=_NoSynonyms())
    assert meteor(hyps[:1], refs[:1], wordnet) > exact_only


class _NoSynonyms:
    """A WordNet with no synsets: METEOR then matches exact words and stems only."""

    def synsets(self, *_a, **_k):
        return []


def test_meteor_identical_sentence_is_near_one(wordnet):
    text = "the violin plays a fast piece in g minor"
    # METEOR's fragmentation penalty never vanishes: 1 - 0.5 * (1 chunk / 9 matches)^3
    assert meteor([text], [[text]], wordnet) == pytest.approx(1 - 0.5 * (1 / 9) ** 3, abs=1e-9)
