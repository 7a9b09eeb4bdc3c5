import json
from pathlib import Path

import pytest

from llama.data import (AUD_RUN, CAPTION_INSTRUCTIONS, GENERATE_TEMPLATES, DataError, DatasetSpec,
                        load_data_config, load_dataset, load_stage)
from llama.data.formats import with_aud_run
from tests.data_fixtures import EXPECTED, write_fixture_datasets


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    return write_fixture_datasets(tmp_path_factory.mktemp("data"))


def _by_id(samples):
    return {s.id: s for s in samples}


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_every_record_is_kept_or_counted_by_reason(config, stage):
    samples, reports = load_stage(config, stage)
    expected = {name: v for (st, name), v in EXPECTED.items() if st == stage}
    assert [r.dataset for r in reports] == list(expected)
    for r in reports:
        read, kept, skipped = expected[r.dataset]
        assert (r.read, r.kept, r.skipped) == (read, kept, skipped), r.line()
        assert r.read == r.kept + r.n_skipped
        assert set(r.examples) == set(skipped)
        for reason, ids in r.examples.items():
            assert len(ids) == skipped[reason] and all(i.startswith(r.dataset + ":") for i in ids)
    assert len(samples) == sum(r.kept for r in reports)
    assert len({s.id for s in samples}) == len(samples)


def test_report_line_and_examples_name_the_skipped_records(config):
    _, reports = load_stage(config, 1)
    mucaps = reports[0]
    assert mucaps.line() == ("mucaps: 4 read, 2 kept, 2 skipped "
                             "(empty caption: 1, media file missing: 1)")
    assert mucaps.examples == {"empty caption": ["mucaps:mc2.wav"],
                               "media file missing": ["mucaps:mc3.wav"]}
    assert reports[2].line() == "muvideo_caps: 2 read, 2 kept"
    assert "mucaps:mc3.wav" in mucaps.details()


def test_stage1_captioning_samples(config):
    samples, _ = load_stage(config, 1)
    s = _by_id(samples)
    root = config.parent
    music = s["mucaps:mc0.wav"]
    assert music.audio == root / "MUCaps/audios/mc0.wav" and music.audio.is_file()
    assert (music.image, music.video, music.target_caption, music.target_audio) == (None,) * 4
    assert music.dataset == "mucaps"
    assert len(music.turns) == 1
    question, answer = music.turns[0]
    assert question in CAPTION_INSTRUCTIONS["audio"]
    assert answer == "A calm piano melody in C major with soft strings."
    assert s["coco:c0.png"].image == root / "COCO/images/c0.png"
    assert s["coco:c0.png"].turns[0][0] in CAPTION_INSTRUCTIONS["image"]
    assert s["muvideo_caps:v1.mp4"].video == root / "MUVideo/videos/v1.mp4"
    assert s["muvideo_caps:v1.mp4"].turns[0][0] in CAPTION_INSTRUCTIONS["video"]
    again, _ = load_stage(config, 1)  # the instruction is picked by a hash of the id, not an RNG
    assert [x.turns for x in again] == [x.turns for x in samples]


def test_stage2_generation_samples_end_with_the_aud_run(config):
    samples, _ = load_stage(config, 2)
    assert samples
    for s in samples:
        (question, answer), = s.turns
        assert answer == f"{s.target_caption} {AUD_RUN}"
        assert answer.endswith("[AUD0][AUD1][AUD2][AUD3][AUD4][AUD5][AUD6][AUD7]")
        assert question in {t.format(caption=s.target_caption) for t in GENERATE_TEMPLATES}
        assert (s.audio, s.image, s.video) == (None, None, None)
    s = _by_id(samples)["mucaps:mc1.wav"]
    assert s.target_caption == "An energetic rock song with electric guitar and drums."
    assert s.target_audio == config.parent / "MUCaps/audios/mc1.wav"


def test_stage3_instruction_samples(config):
    samples, _ = load_stage(config, 3)
    s = _by_id(samples)
    root = config.parent
    qa = s["musicqa:1"]  # "conversations", two turns
    assert qa.audio == root / "MusicQA/audios/q1.wav" and qa.target_caption is None
    assert qa.turns == [("Which instruments can you hear?", "A piano and a violin."),
                        ("Which one carries the melody?", "The violin.")]
    assert s["alpaca:0"].turns == [("Give three tips for staying healthy.",
                                    "Eat well, sleep enough and exercise.")]
    assert s["alpaca:1"].turns == [("Translate the sentence to French.\n\nI like music.",
                                    "J'aime la musique.")]
    assert s["alpaca:3"].turns == [("What is 2 + 2?", "4."), ("And times 3?", "12.")]  # user/assistant
    assert all(x.audio is x.image is x.video is None for x in samples if x.dataset == "alpaca")

    img = s["muimage:1"]  # user/assistant roles, "conversations"
    assert img.image == root / "MUImage/images/i1.png" and img.audio is None
    assert img.turns == [("Compose music for this picture.", f"A playful tune for the dogs. {AUD_RUN}")]
    assert img.target_caption == "A playful ukulele tune."
    assert img.target_audio == root / "MUImage/audios/o1.wav"

    vid = s["muvideo:1"]  # multi-turn: only the last answer writes music
    assert vid.video == root / "MUVideo/videos/v1.mp4"
    assert vid.turns[0] == ("What happens in this video?", "A car drives through a city at night.")
    assert vid.turns[1][1] == f"Dark synth music for the night drive. {AUD_RUN}"
    assert vid.target_caption == "A dark synthesizer track at 100 BPM."

    assert s["muedit:0"].target_caption == "A fast piano melody."            # from the turn
    assert s["muedit:1"].target_caption == "A slow violin melody in D minor."  # captions file
    assert s["muedit:1"].audio == root / "MUEdit/audios/e1.wav"


def test_muedit_without_captions_file_skips_records_without_caption(config):
    specs = load_data_config(config)[3]
    muedit = next(x for x in specs if x.name == "muedit")
    muedit.captions = None
    samples, report = load_dataset(muedit, 3)
    assert [x.id for x in samples] == ["muedit:0"]
    assert report.skipped == {"no caption for target music": 2, "bad conversation order": 1}
    assert report.examples["no caption for target music"] == ["muedit:1", "muedit:2"]


def test_aud_run_is_appended_once_and_normalised():
    assert with_aud_run("Here.") == f"Here. {AUD_RUN}"
    assert with_aud_run(f"Here. {AUD_RUN}") == f"Here. {AUD_RUN}"
    spaced = "Here. " + " ".join(f"[AUD{i}]" for i in range(8)) + " Enjoy."
    assert with_aud_run(spaced) == f"Here. {AUD_RUN} Enjoy."
    assert with_aud_run("[AUD0] only") == f"[AUD0] only {AUD_RUN}"


def test_unreadable_json_is_a_one_line_error_naming_the_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"a.wav": "caption",\n  oops}')
    spec = DatasetSpec("mucaps", "captions", bad, modality="audio", media_dir=tmp_path)
    with pytest.raises(DataError) as e:
        load_dataset(spec, 1)
    assert "broken.json" in str(e.value) and "\n" not in str(e.value)
    spec.annotations = tmp_path / "absent.json"
    with pytest.raises(DataError, match="absent.json: file not found"):
        load_dataset(spec, 1)
    bad.write_text('"just a string"')
    with pytest.raises(DataError, match="broken.json: expected"):
        load_dataset(DatasetSpec("m", "musicqa", bad, media_dir=tmp_path), 3)


def test_other_caption_layouts_limit_and_jsonl(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    coco = tmp_path / "captions_train2017.json"
    coco.write_text(json.dumps({
        "images": [{"id": 7, "file_name": "a.png"}, {"id": 8, "file_name": "b.png"}],
        "annotations": [{"id": 1, "image_id": 7, "caption": "A house."},
                        {"id": 2, "image_id": 7, "caption": "A red house."},
                        {"id": 3, "image_id": 8, "caption": "Missing."}]}))
    samples, report = load_dataset(DatasetSpec("coco", "captions", coco, "image", tmp_path), 1)
    assert [(x.id, x.turns[0][1]) for x in samples] == [("coco:1", "A house."), ("coco:2", "A red house.")]
    assert report.skipped == {"media file missing": 1}

    listed = tmp_path / "list.jsonl"
    listed.write_text('{"image": "a.png", "caption": "One."}\n\n{"file": "a.png"}\n'
                      '{"image": "a.png", "caption": "Three."}\n')
    spec = DatasetSpec("l", "captions", listed, "image", tmp_path)
    samples, report = load_dataset(spec, 1)
    assert [x.turns[0][1] for x in samples] == ["One.", "Three."]
    assert report.skipped == {"malformed record": 1}
    spec.limit = 1
    samples, report = load_dataset(spec, 1)
    assert (report.read, report.kept) == (1, 1)


def test_config_paths_resolve_against_the_config_folder(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the config's folder
    stages = load_data_config(config)
    assert sorted(stages) == [1, 2, 3]
    mucaps = stages[1][0]
    assert mucaps.annotations == config.parent / "MUCaps/MUCapsCaptions.json"
    assert mucaps.media_dir == config.parent / "MUCaps/audios"
    muedit = stages[3][-1]
    assert muedit.captions == config.parent / "MUEdit/captions.json"
    assert muedit.output_dir == config.parent / "MUEdit/audios"

    # the same in JSON, from another folder, with an absolute path and limit/weight
    other = tmp_path / "cfg" / "data.json"
    other.parent.mkdir()
    entry = {"name": "mc", "format": "captions", "modality": "audio",
             "annotations": str(mucaps.annotations), "media_dir": "../media", "limit": 2,
             "weight": 0.5}
    other.write_text(json.dumps({"stage1": [entry]}))
    spec, = load_data_config(other)[1]
    assert spec.annotations == mucaps.annotations
    assert spec.media_dir == tmp_path / "cfg" / "../media"
    assert (spec.limit, spec.weight) == (2, 0.5)
    with pytest.raises(DataError, match="no stage3 datasets"):
        load_stage(other, 3)


@pytest.mark.parametrize("entry, message", [
    ({"format": "tsv", "annotations": "a.json"}, "entry 1 (x): unknown format 'tsv'"),
    ({"format": "captions", "annotations": "a.json", "modality": "audio", "media_dir": "m",
      "colour": 1}, "entry 1 (x): unknown key 'colour'"),
    ({"format": "captions", "annotations": "a.json", "media_dir": "m"}, "needs a modality"),
    ({"format": "captions", "annotations": "a.json", "modality": "smell", "media_dir": "m"},
     "unknown modality"),
    ({"format": "musicqa"}, "missing annotations"),
])
def test_config_mistakes_name_the_file_and_the_entry(tmp_path, entry, message):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"stage3": [{"name": "x", **entry}]}))  # JSON is valid YAML
    with pytest.raises(DataError, match="bad.yaml") as e:
        load_data_config(path)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("stage, entry, message", [
    (1, {"format": "instruct", "modality": "image", "media_dir": "m"}, "stage 1 is understanding"),
    (1, {"format": "captions", "modality": "audio", "media_dir": "m", "task": "generate"},
     "stage 1 is understanding"),
    (2, {"format": "alpaca"}, "stage 2 trains music generation"),
    (2, {"format": "musicqa", "media_dir": "m"}, "stage 2 trains music generation"),
    (2, {"format": "captions", "modality": "image", "media_dir": "m"}, "only music captions"),
    (3, {"format": "captions", "modality": "video", "task": "generate"}, "only music captions"),
])
def test_datasets_that_make_no_sense_in_a_stage_are_refused(tmp_path, stage, entry, message):
    path = tmp_path / "data.yaml"
    path.write_text(json.dumps({f"stage{stage}": [{"name": "x", "annotations": "a.json", **entry}]}))
    with pytest.raises(DataError, match=f"data.yaml: stage{stage} entry 1 \\(x\\): {message}"):
        load_data_config(path)
    spec = DatasetSpec(**{"name": "x", "annotations": "a.json", **entry})
    with pytest.raises(DataError, match=message):
        load_dataset(spec, stage)


def test_bad_config_files(tmp_path):
    path = tmp_path / "data.toml"
    path.write_text("")
    with pytest.raises(DataError, match="data.toml: data config must be"):
        load_data_config(path)
    path = tmp_path / "data.yaml"
    path.write_text("stage1: [\n")
    with pytest.raises(DataError, match="data.yaml: not valid YAML") as e:
        load_data_config(path)
    assert "\n" not in str(e.value)
    path.write_text("stage4: []\n")
    with pytest.raises(DataError, match="unknown key 'stage4'"):
        load_data_config(path)
    with pytest.raises(DataError, match="absent.yaml: data config not found"):
        load_data_config(tmp_path / "absent.yaml")
