import pytest
import torch

from llama.data import AUD_RUN, IGNORE, Sample, collate, encode_sample, encode_samples, load_stage
from llama.data.collate import CONTINUATION
from llama.tiny import write_tokenizer
from llama.tokenizer import Tokenizer, format_prompt
from tests.data_fixtures import write_fixture_datasets


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return Tokenizer(write_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.model", 512))


def _label_runs(labels):
    """Contiguous runs of labelled positions: [(start, end), ...]."""
    runs, start = [], None
    for i, y in enumerate(labels + [IGNORE]):
        if y != IGNORE and start is None:
            start = i
        elif y == IGNORE and start is not None:
            runs.append((start, i))
            start = None
    return runs


TEXT = Sample("t:0", [("Describe the music in detail.", "A calm jazz song with piano.")])
MUSIC = Sample("m:0", [("Generate a music: a happy folk song with guitar.",
                        f"A happy folk song with guitar. {AUD_RUN}")],
               target_caption="A happy folk song with guitar.")
MULTI = Sample("v:1", [("What is the genre of this song?", "It is rock."),
                       ("What instruments can you hear?", "Guitar and drums."),
                       ("Compose music for this video.", f"Here is dark music. {AUD_RUN}")],
               target_caption="A dark rock song.")


def test_labels_are_the_answer_and_eos_only(tok):
    e = encode_sample(TEXT, tok, max_len=512)
    question, answer = TEXT.turns[0]
    prompt = tok.encode(format_prompt(question), bos=True)  # exactly what inference feeds
    reply = tok.encode(answer, bos=False, eos=True)
    assert e.tokens == prompt + reply and e.tokens[0] == tok.bos_id
    assert e.labels == [IGNORE] * len(prompt) + reply
    assert _label_runs(e.labels) == [(len(prompt), len(e.tokens))]
    labelled = [t for t, y in zip(e.tokens, e.labels) if y != IGNORE]
    assert labelled[-1] == tok.eos_id and tok.decode(labelled) == answer
    assert all(y in (IGNORE, t) for t, y in zip(e.tokens, e.labels))  # aligned, not shifted
    assert e.aud_positions == [] and e.id == "t:0" and e.target_caption is None


def test_multi_turn_masks_every_instruction(tok):
    e = encode_sample(MULTI, tok, max_len=512)
    runs = _label_runs(e.labels)
    assert len(runs) == 3
    for (start, end), (question, answer) in zip(runs, MULTI.turns):
        assert e.tokens[end - 1] == tok.eos_id
        assert tok.decode(e.tokens[start:end], skip_aud=False) == answer
    masked = [t for t, y in zip(e.tokens, e.labels) if y == IGNORE]
    expected_prompt = format_prompt(MULTI.turns[0][0]) + "".join(
        CONTINUATION.format(instruction=q) for q, _ in MULTI.turns[1:])
    assert tok.decode(masked) == expected_prompt
    # the whole sequence reads as one conversation (no stray space before "\n\n### Instruction")
    (q1, a1), (q2, a2), (q3, a3) = MULTI.turns
    assert tok.decode(e.tokens, skip_aud=False) == (
        format_prompt(q1) + " " + a1 + CONTINUATION.format(instruction=q2) + " " + a2
        + CONTINUATION.format(instruction=q3) + " " + a3)


def test_aud_positions_point_at_the_eight_aud_ids(tok):
    for sample in (MUSIC, MULTI):
        e = encode_sample(sample, tok, max_len=512)
        assert len(e.aud_positions) == 8
        assert [e.tokens[p] for p in e.aud_positions] == tok.aud_ids
        assert [e.labels[p] for p in e.aud_positions] == tok.aud_ids  # the model learns to emit them
        assert e.aud_positions[-1] == len(e.tokens) - 2 and e.tokens[-1] == tok.eos_id
        assert e.target_caption == sample.target_caption
    text_with_aud = Sample("x:0", [("Say it.", f"Tokens {AUD_RUN}")])  # no music target
    assert encode_sample(text_with_aud, tok, 512).aud_positions == []
    no_run = Sample("x:1", [("Play.", "No tokens here.")], target_caption="A song.")
    with pytest.raises(ValueError, match="x:1: writes music"):
        encode_sample(no_run, tok, 512)


def test_collate_pads_right_and_masks_padding(tok):
    encoded = [encode_sample(s, tok, 512) for s in (TEXT, MULTI, MUSIC)]
    lengths = [len(e.tokens) for e in encoded]
    assert len(set(lengths)) == 3
    batch = collate(encoded, pad_id=0)
    B, S = 3, max(lengths)
    assert batch["tokens"].shape == batch["labels"].shape == batch["key_mask"].shape == (B, S)
    assert batch["tokens"].dtype == batch["labels"].dtype == torch.long
    assert batch["key_mask"].dtype == torch.bool
    assert batch["key_mask"].sum(1).tolist() == lengths
    for b, (e, n) in enumerate(zip(encoded, lengths)):
        assert batch["tokens"][b, :n].tolist() == e.tokens
        assert batch["labels"][b, :n].tolist() == e.labels
        assert batch["key_mask"][b, :n].all() and not batch["key_mask"][b, n:].any()
        assert (batch["tokens"][b, n:] == 0).all() and (batch["labels"][b, n:] == IGNORE).all()
    aud = batch["aud_positions"]
    assert aud.shape == (B, 8) and aud.dtype == torch.long
    assert (aud[0] == -1).all()
    for b in (1, 2):
        assert batch["tokens"][b, aud[b]].tolist() == tok.aud_ids
    assert batch["ids"] == ["t:0", "v:1", "m:0"]
    assert batch["target_captions"] == [None, "A dark rock song.", "A happy folk song with guitar."]
    assert batch["samples"] == [TEXT, MULTI, MUSIC]
    assert collate(encoded[:1], pad_id=7)["aud_positions"].tolist() == [[-1] * 8]


def test_truncation_keeps_the_first_answer_and_never_cuts_the_aud_run(tok):
    full = encode_sample(TEXT, tok, 512)
    n_prompt = full.labels.index(tok.encode(TEXT.turns[0][1], bos=False)[0])
    assert encode_sample(TEXT, tok, len(full.tokens)).tokens == full.tokens  # exactly fits
    cut = encode_sample(TEXT, tok, n_prompt + 2)  # part of the answer survives
    assert cut.tokens == full.tokens[:n_prompt + 2] and cut.labels == full.labels[:n_prompt + 2]
    assert encode_sample(TEXT, tok, n_prompt) is None  # nothing of the answer would be left

    music = encode_sample(MUSIC, tok, 512)
    first_aud, last_aud = music.aud_positions[0], music.aud_positions[-1]
    for max_len in (first_aud, first_aud + 3, last_aud):  # would lose or cut the [AUD] run
        assert encode_sample(MUSIC, tok, max_len) is None
    kept = encode_sample(MUSIC, tok, last_aud + 1)  # only the final EOS goes
    assert kept.tokens == music.tokens[:-1] and kept.aud_positions == music.aud_positions

    multi = encode_sample(MULTI, tok, 512)
    runs = _label_runs(multi.labels)
    assert encode_sample(MULTI, tok, runs[2][0] + 4) is None  # the last turn holds the [AUD] run


def test_truncation_drops_a_later_instruction_without_its_answer(tok):
    sample = Sample("a:3", MULTI.turns[:2] + [("And the tempo?", "About 120 BPM, quite fast.")])
    full = encode_sample(sample, tok, 512)
    (s1, e1), (s2, e2), (s3, e3) = _label_runs(full.labels)
    inside_prompt = encode_sample(sample, tok, e2 + 3)  # cut inside turn 3's instruction
    assert inside_prompt.tokens == full.tokens[:e2] and inside_prompt.tokens[-1] == tok.eos_id
    inside_answer = encode_sample(sample, tok, s3 + 2)  # cut inside turn 3's answer
    assert inside_answer.tokens == full.tokens[:s3 + 2]
    assert inside_answer.labels[-2:] == full.tokens[s3:s3 + 2]


def test_fixture_stages_encode_and_collate(tok, tmp_path):
    config = write_fixture_datasets(tmp_path)
    for stage in (1, 2, 3):
        samples, _ = load_stage(config, stage)
        encoded, rejected = encode_samples(samples, tok, max_len=512)
        assert rejected == [] and len(encoded) == len(samples)
        batch = collate(encoded)
        music = [s.target_caption is not None for s in samples]
        assert ((batch["aud_positions"] >= 0).all(1)).tolist() == music
        assert ((batch["aud_positions"] == -1).all(1)).tolist() == [not m for m in music]
    short, rejected = encode_samples(samples, tok, max_len=40)
    assert len(short) + len(rejected) == len(samples) and rejected
    assert all(len(e.tokens) <= 40 for e in short)
