"""--batch-size: batched answers are the one-by-one answers (tokens, WAV samples), in input order,
and a request that fails inside a batch fails alone."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import inference
from llama.examples import write_examples


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("media")
    write_examples(d)
    (d / "corrupt.png").write_bytes((d / "image.png").read_bytes()[:40])
    return d


@pytest.fixture(scope="module")
def tiny_pipes(tiny_bundle):
    """Loaded once per decoder and weight layout: the CLI gets them instead of loading its own."""
    return {}


@pytest.fixture
def cli(tiny_bundle, tiny_pipes, monkeypatch, capsys):
    def load(args):
        key = (args.music_decoder or "musicgen", args.weight_layout)
        if key not in tiny_pipes:
            tiny_pipes[key] = real_load(args)
        return tiny_pipes[key]

    real_load = inference.load_pipeline
    monkeypatch.setattr(inference, "load_pipeline", load)

    def run(*argv):
        capsys.readouterr()
        try:
            rc = inference.main(["--ckpt-dir", str(tiny_bundle), *map(str, argv)])
        except SystemExit as e:                      # option errors exit from argparse
            rc = e.code
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return rc, out, err
    return run


def mixed_requests(media: Path, n: int = 20) -> list[dict]:
    """Text, audio, image and video questions of varied lengths and budgets; every third one
    makes music; some are sampled (temperature > 0), each with its own seed."""
    kinds = [{}, {"audio": str(media / "melody.wav")}, {"image": str(media / "image.png")},
             {"video": str(media / "video.mp4")}]
    prompts = ["Describe it.", "What instruments can you hear in this?", "Write a calm piano piece.",
               "Describe the image."]
    reqs = []
    for i in range(n):
        r = {"id": f"r{i}", "prompt": prompts[i % 4] + " again" * (i % 3), "max_new_tokens": 3 + i % 4,
             "seed": 100 + i, **kinds[(i // 4 + i) % 4]}
        if i % 3 == 0:
            r.update(music=True, duration=0.2)
        if i % 5 == 1:
            r["temperature"] = 0.8
        reqs.append(r)
    return reqs


def write_jsonl(path: Path, reqs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in reqs))
    return path


def results(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "timings"}
            for line in (out / "results.jsonl").read_text().splitlines()]


def wav_samples(out: Path, name: str) -> np.ndarray:
    return sf.read(out / name, dtype="int16")[0]


def test_batched_equals_one_by_one_on_twenty_mixed_requests(cli, media, tmp_path):
    reqs = write_jsonl(tmp_path / "r.jsonl", mixed_requests(media))
    rc1, _, _ = cli("--input", reqs, "--output-dir", tmp_path / "one", "--batch-size", 1)
    rc8, _, _ = cli("--input", reqs, "--output-dir", tmp_path / "eight", "--batch-size", 8)
    assert rc1 == rc8 == 0
    one, eight = results(tmp_path / "one"), results(tmp_path / "eight")
    assert [r["id"] for r in eight] == [f"r{i}" for i in range(20)]          # input order
    assert eight == one                                                      # answers, wav names, errors
    wavs = [r["wav"] for r in one if r["wav"]]
    assert len(wavs) == 7
    for name in wavs:
        assert np.array_equal(wav_samples(tmp_path / "eight", name), wav_samples(tmp_path / "one", name)), name
    timings = [json.loads(line)["timings"] for line in (tmp_path / "eight" / "results.jsonl").read_text().splitlines()]
    assert max(t["batch_size"] for t in timings) > 1                         # they really were batched
    # the row-major weight layout (W @ x^T for a few rows) gives the same answers
    rc, _, _ = cli("--input", reqs, "--output-dir", tmp_path / "rows", "--batch-size", 8, "--weight-layout", "rows")
    assert rc == 0 and results(tmp_path / "rows") == one
    # and so does the oneDNN-prepacked copy (llama.prepacked) that batches of 2-16 rows read
    rc, _, _ = cli("--input", reqs, "--output-dir", tmp_path / "onednn", "--batch-size", 8, "--weight-layout", "onednn")
    assert rc == 0 and results(tmp_path / "onednn") == one


def test_one_decoder_serves_the_whole_job_across_windows(cli, media, tmp_path, monkeypatch):
    """Batch size 2: windows of 8 requests, yet one decoder takes all 20 in turn (no row waits for
    a window to end), and every answer and WAV is still the one-by-one one."""
    from llama import generation
    reqs = write_jsonl(tmp_path / "r.jsonl", mixed_requests(media))
    assert cli("--input", reqs, "--output-dir", tmp_path / "one", "--batch-size", 1)[0] == 0
    made, real_init = [], generation.Decoder.__init__

    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        made.append(self)

    monkeypatch.setattr(generation.Decoder, "__init__", init)
    assert cli("--input", reqs, "--output-dir", tmp_path / "two", "--batch-size", 2)[0] == 0
    assert len(made) == 1 and len(made[0].row) == 2
    one, two = results(tmp_path / "one"), results(tmp_path / "two")
    assert two == one
    for r in one:
        if r["wav"]:
            assert np.array_equal(wav_samples(tmp_path / "two", r["wav"]), wav_samples(tmp_path / "one", r["wav"]))


def music_calls(cli, tiny_pipes, path: Path, out: Path, batch_size: int) -> list[int]:
    """Run the batch job with MusicGen loaded already; -> rows of each music-decoder call."""
    dec = tiny_pipes[("musicgen", "columns")].decoder()
    real, calls = dec.render_projected, []

    def spy(cond, *a, **k):
        calls.append(cond.shape[0])
        return real(cond, *a, **k)

    dec.render_projected = spy
    try:
        assert cli("--input", path, "--output-dir", out, "--batch-size", batch_size)[0] == 0
    finally:
        del dec.render_projected
    return calls


def test_music_of_a_window_renders_in_few_decoder_calls(cli, media, tmp_path, tiny_pipes):
    """Music requests spread over batches render together after the window's last batch, at most
    batch-size rows per decoder call, and each WAV is still the one it gets alone. Here 3 batches
    of 4 (one per modality mix) hold 2 music requests each: 2 decoder calls, not 3. (The audio
    requests are not edits here: edits render alone, see the next test.)"""
    mixes = [{}, {"image": str(media / "image.png")}, {"audio": str(media / "melody.wav"), "edit_mode": "none"}]
    reqs = [{"id": f"m{i}", "prompt": "Write a calm piano piece.", "max_new_tokens": 2, "seed": i,
             **mixes[i % 3], **({"music": True, "duration": 0.2} if i % 2 == 0 else {})} for i in range(12)]
    path = write_jsonl(tmp_path / "m.jsonl", reqs)
    assert cli("--input", path, "--output-dir", tmp_path / "one", "--batch-size", 1)[0] == 0
    assert cli("--input", path, "--output-dir", tmp_path / "warm", "--batch-size", 4)[0] == 0   # loads it
    calls = music_calls(cli, tiny_pipes, path, tmp_path / "four", 4)
    timings = [json.loads(line)["timings"] for line in (tmp_path / "four" / "results.jsonl").read_text().splitlines()]
    assert sorted(t["batch_size"] for t in timings) == [4] * 12                 # 3 text batches of 4
    music = [r for r in results(tmp_path / "one") if r["wav"]]
    assert len(music) >= 6 and sum(calls) == len(music) and max(calls) <= 4 and len(calls) < 3
    assert results(tmp_path / "four") == results(tmp_path / "one")
    for r in music:
        assert np.array_equal(wav_samples(tmp_path / "four", r["wav"]), wav_samples(tmp_path / "one", r["wav"]))


def test_music_renders_in_full_decoder_calls_while_text_decodes(cli, media, tmp_path, tiny_pipes):
    """16 music answers at batch size 4: four decoder calls of 4 rows, not one per finished answer
    (music waits for a decoder call's worth unless the first unwritten answer is stuck behind it)."""
    reqs = [{"id": f"m{i}", "prompt": "Write a calm piano piece." + " Now." * (i % 3), "max_new_tokens": 1 + i % 5,
             "seed": i, "music": True, "duration": 0.2} for i in range(16)]
    path = write_jsonl(tmp_path / "m.jsonl", reqs)
    assert cli("--input", path, "--output-dir", tmp_path / "warm", "--batch-size", 4)[0] == 0   # loads it
    calls = music_calls(cli, tiny_pipes, path, tmp_path / "four", 4)
    assert calls == [4, 4, 4, 4]
    assert results(tmp_path / "four") == results(tmp_path / "warm")


def test_edits_in_a_batch_follow_their_source_as_alone(cli, media, tmp_path, tiny_pipes):
    """Music asked with an audio input is an edit (--edit-mode, or "edit_mode" per request): in a
    batch it renders from its own source exactly as alone (`auto`: MusicGen continues the source
    here, the random bundle has no MusicGen-Melody); `none` ignores the source. An edit mode the
    decoder cannot do fails only its request."""
    src = str(media / "melody.wav")
    reqs = [{"id": f"e{i}", "prompt": "Play it on the flute instead.", "audio": src, "music": True,
             "duration": 0.3, "max_new_tokens": 2, "seed": i} for i in range(3)]
    reqs += [{"id": "plain", "prompt": "Write a calm piano piece.", "music": True, "duration": 0.3,
              "max_new_tokens": 2, "seed": 0},
             {"id": "e0-none", **reqs[0], "edit_mode": "none"}]
    reqs[-1]["id"] = "e0-none"
    path = write_jsonl(tmp_path / "e.jsonl", reqs)
    assert cli("--input", path, "--output-dir", tmp_path / "one", "--batch-size", 1)[0] == 0
    assert cli("--input", path, "--output-dir", tmp_path / "four", "--batch-size", 4)[0] == 0
    one, four = results(tmp_path / "one"), results(tmp_path / "four")
    assert four == one and all(r["error"] is None and r["wav"] for r in one)
    for r in one:
        assert np.array_equal(wav_samples(tmp_path / "four", r["wav"]), wav_samples(tmp_path / "one", r["wav"]))
    # the edit is not what the same request renders without its source
    by_id = {r["id"]: r for r in one}
    edit, plain = wav_samples(tmp_path / "one", by_id["e0"]["wav"]), wav_samples(tmp_path / "one", by_id["e0-none"]["wav"])
    assert edit.shape == plain.shape and not np.array_equal(edit, plain)
    assert tiny_pipes[("musicgen", "columns")].edit_decoder("auto")[1] == "prompt"
    # the three edits of one source length rendered in one call; the source-less two in another
    batches = {r["id"]: json.loads(line)["timings"]["render_batch"]
               for r, line in zip(four, (tmp_path / "four" / "results.jsonl").read_text().splitlines())}
    assert [batches[f"e{i}"] for i in range(3)] == [3, 3, 3] and batches["plain"] == batches["e0-none"] == 2
    # an edit mode the decoder cannot do (AudioLDM2's `init` on MusicGen) fails that request alone
    bad = write_jsonl(tmp_path / "bad.jsonl", [reqs[0] | {"edit_mode": "init"}, reqs[3]])
    rc, _, _ = cli("--input", bad, "--output-dir", tmp_path / "bad", "--batch-size", 2)
    res = {r["id"]: r for r in results(tmp_path / "bad")}
    assert rc == 1 and res["e0"]["error"] and "init" in res["e0"]["error"] and res["plain"]["wav"]


def test_melody_edits_batch_and_equal_alone(tiny_bundle_with_melody, media, tmp_path, capsys):
    """With a MusicGen-Melody beside MusicGen, `auto` edits go to it; edits whose sources have one
    length render in one call, each WAV the one it gets alone; a source of another length alone."""
    bundle = tiny_bundle_with_melody
    wave, sr = sf.read(media / "melody.wav", dtype="float32")
    sf.write(tmp_path / "short.wav", wave[: len(wave) // 2], sr)
    reqs = [{"id": f"e{i}", "prompt": "Play it on the flute instead.", "audio": str(media / "melody.wav"),
             "music": True, "duration": 0.3, "max_new_tokens": 2, "seed": i} for i in range(3)]
    reqs.append(reqs[0] | {"id": "short", "audio": str(tmp_path / "short.wav")})
    path = write_jsonl(tmp_path / "e.jsonl", reqs)
    for b in (1, 4):
        assert inference.main(["--ckpt-dir", str(bundle), "--input", str(path), "--output-dir",
                               str(tmp_path / f"b{b}"), "--batch-size", str(b)]) == 0
    capsys.readouterr()
    one, four = results(tmp_path / "b1"), results(tmp_path / "b4")
    assert four == one and all(r["wav"] for r in one)
    for r in one:
        assert np.array_equal(wav_samples(tmp_path / "b4", r["wav"]), wav_samples(tmp_path / "b1", r["wav"]))
    timings = {r["id"]: json.loads(line)["timings"]
               for r, line in zip(four, (tmp_path / "b4" / "results.jsonl").read_text().splitlines())}
    assert [timings[f"e{i}"]["render_batch"] for i in range(3)] == [3, 3, 3]
    assert timings["short"]["render_batch"] == 1


def test_one_corrupt_file_among_eight_fails_alone(cli, media, tmp_path):
    reqs = [{"id": f"q{i}", "prompt": "Describe the image.", "image": str(media / "image.png"),
             "max_new_tokens": 3} for i in range(8)]
    reqs[5]["image"] = str(media / "corrupt.png")
    rc, out, err = cli("--input", write_jsonl(tmp_path / "r.jsonl", reqs), "--output-dir", tmp_path / "o",
                       "--batch-size", 8)
    assert rc == 1
    recs = results(tmp_path / "o")
    assert [r["id"] for r in recs] == [f"q{i}" for i in range(8)]
    assert [r["error"] is None for r in recs] == [i != 5 for i in range(8)]
    assert "corrupt.png" in recs[5]["error"] and recs[5]["answer"] is None
    alone = results_of_one(cli, tmp_path, media, reqs[0])
    assert all(r["answer"] == alone for i, r in enumerate(recs) if i != 5)


def test_a_long_prompt_beside_a_long_answer_is_answered(cli, tiny_bundle, tmp_path):
    """Each fits the context alone; a batch sized for the longest prompt plus the largest budget
    would not (the job used to stop on that with a context error)."""
    from llama.pipeline import BundlePaths, MuMuPipeline
    from llama.tokenizer import format_prompt
    pipe = MuMuPipeline.load(BundlePaths.from_bundle(tiny_bundle))
    ctx, n_aud = pipe.model.cfg.llama.max_seq_len, pipe.model.cfg.llama.n_aud_tokens
    size = lambda text: len(pipe.tokenizer.encode(format_prompt(text), bos=True))
    words = 1
    while size("la " * (words + 1)) + 2 + n_aud <= ctx:
        words += 1
    long_prompt, short = "la " * words, "Hi."
    reqs = [{"id": "long-prompt", "prompt": long_prompt, "max_new_tokens": 2},
            {"id": "long-answer", "prompt": short, "max_new_tokens": ctx - size(short) - n_aud}]
    assert size(long_prompt) + reqs[1]["max_new_tokens"] + n_aud > ctx
    rc, _, err = cli("--input", write_jsonl(tmp_path / "r.jsonl", reqs), "--output-dir", tmp_path / "o",
                     "--batch-size", 2)
    assert rc == 0, err
    assert [r["error"] for r in results(tmp_path / "o")] == [None, None]


def test_answer_batch_from_python_equals_answer_alone(tiny_bundle, media):
    from llama.errors import UserError
    from llama.pipeline import BundlePaths, MuMuPipeline
    from llama.request_schema import Request
    pipe = MuMuPipeline.load(BundlePaths.from_bundle(tiny_bundle))
    kinds = [{"image": str(media / "image.png")}, {}, {"audio": str(media / "melody.wav")},
             {"video": str(media / "video.mp4")}, {}]
    reqs = [Request(id=f"p{i}", prompt="Describe it." + " Again." * i, max_new_tokens=2 + 2 * i, seed=i,
                    music=i == 1, duration=0.2, temperature=0.7 if i == 3 else 0.0, **kinds[i]) for i in range(5)]
    reqs.insert(2, Request(id="too-long", prompt="la " * 4 * pipe.model.cfg.llama.max_seq_len))
    out = pipe.answer_batch(reqs, batch_size=2)
    assert isinstance(out[2], UserError) and "context" in str(out[2])
    for req, got in zip(reqs[:2] + reqs[3:], out[:2] + out[3:]):
        alone = pipe.answer(req.prompt, **req.media(), **req.gen_kwargs(), **req.edit_kwargs())
        assert got.tokens == alone.tokens and got.text == alone.text
        assert (got.audio is None) == (alone.audio is None)
        if alone.audio is not None:
            assert np.array_equal(got.audio, alone.audio)
    assert out[1].audio is not None


def results_of_one(cli, tmp_path, media, req) -> str:
    rc, _, _ = cli("--input", write_jsonl(tmp_path / "alone.jsonl", [req]), "--output-dir", tmp_path / "alone")
    assert rc == 0
    return results(tmp_path / "alone")[0]["answer"]


def test_batched_rerun_retries_only_the_failed(cli, media, tmp_path):
    reqs = [{"id": f"q{i}", "prompt": "Describe it.", "max_new_tokens": 2} for i in range(5)]
    reqs[2]["image"] = str(tmp_path / "later.png")                            # missing on the first run
    path = write_jsonl(tmp_path / "r.jsonl", reqs)
    assert cli("--input", path, "--output-dir", tmp_path / "o", "--batch-size", 4)[0] == 1
    (tmp_path / "later.png").write_bytes((media / "image.png").read_bytes())
    rc, _, err = cli("--input", path, "--output-dir", tmp_path / "o", "--batch-size", 4)
    assert rc == 0 and "4 already done, 1 to run" in err
    recs = results(tmp_path / "o")
    assert [r["id"] for r in recs] == ["q0", "q1", "q2", "q3", "q4", "q2"]
    assert recs[2]["error"] and recs[-1]["error"] is None


def test_audioldm2_batched_equals_one_by_one(cli, media, tmp_path):
    """AudioLDM2's UNet differs in the last float bit between a batch and one row (its kernels
    are picked by batch size), so WAV samples may differ by one 16-bit step; tokens are equal."""
    reqs = [{"id": f"m{i}", "prompt": "Write music." + " more" * i, "music": True, "duration": 0.2,
             "max_new_tokens": 2, "seed": i} for i in range(4)]
    path = write_jsonl(tmp_path / "r.jsonl", reqs)
    for size in (1, 4):
        assert cli("--input", path, "--output-dir", tmp_path / f"b{size}", "--batch-size", size,
                   "--music-decoder", "audioldm2")[0] == 0
    one, four = results(tmp_path / "b1"), results(tmp_path / "b4")
    assert four == one
    for r in one:
        a, b = wav_samples(tmp_path / "b1", r["wav"]), wav_samples(tmp_path / "b4", r["wav"])
        assert a.shape == b.shape and np.abs(a.astype(int) - b).max() <= 1 and np.abs(a).max() > 100


def test_batch_size_is_checked(cli, tmp_path):
    rc, _, err = cli("--input", tmp_path / "r.jsonl", "--output-dir", tmp_path / "o", "--batch-size", 0)
    assert rc == 2 and err.startswith("error:") and "batch" in err
