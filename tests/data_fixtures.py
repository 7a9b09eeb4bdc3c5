"""Tiny training sets in every published format, for the data and training tests.

    config = write_fixture_datasets(tmp_path)      # -> tmp_path / "data.yaml"
    samples, reports = load_stage(config, 3)

Writes, in well under a second, a few records per dataset (deliberately bad ones included: a
missing media file, an empty caption, a bad conversation order, a MUEdit record without caption,
with and without a captions file, both Alpaca layouts, both "conversation" and "conversations",
multi-turn records), tiny media (0.5 s of 24 kHz mono audio, a 32 x 32 image, an 8-frame
32 x 32 video, the same bytes copied under every name) and a data.yaml for stages 1-3 with
relative paths. `EXPECTED` lists what loading each stage must report.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from llama.examples import write_video

# (stage, dataset) -> (read, kept, {reason: count})
EXPECTED = {
    (1, "mucaps"): (4, 2, {"empty caption": 1, "media file missing": 1}),
    (1, "coco"): (3, 2, {"media file missing": 1}),
    (1, "muvideo_caps"): (2, 2, {}),
    (2, "mucaps"): (4, 3, {"empty caption": 1}),  # the music is the target: not opened, not needed
    (3, "musicqa"): (5, 2, {"bad conversation order": 1, "media file missing": 1,
                            "malformed record": 1}),
    (3, "alpaca"): (6, 4, {"empty answer": 1, "malformed record": 1}),
    (3, "muimage"): (4, 2, {"media file missing": 1, "no caption for target music": 1}),
    (3, "muvideo"): (2, 2, {}),
    (3, "muedit"): (4, 2, {"no caption for target music": 1, "bad conversation order": 1}),
}

CONFIG = """\
# Tiny fixture datasets (tests/data_fixtures.py); paths are relative to this file.
stage1:
  - {name: mucaps, format: captions, modality: audio, annotations: MUCaps/MUCapsCaptions.json, media_dir: MUCaps/audios}
  - {name: coco, format: captions, modality: image, annotations: COCO/captions.json, media_dir: COCO/images}
  - {name: muvideo_caps, format: captions, modality: video, annotations: MUVideo/captions.json, media_dir: MUVideo/videos}
stage2:
  - {name: mucaps, format: captions, modality: audio, annotations: MUCaps/MUCapsCaptions.json, media_dir: MUCaps/audios}
stage3:
  - {name: musicqa, format: musicqa, annotations: MusicQA/MusicQA.json, media_dir: MusicQA/audios}
  - {name: alpaca, format: alpaca, annotations: Alpaca/alpaca.json}
  - {name: muimage, format: instruct, modality: image, annotations: MUImage/MUImageInstructions.json, media_dir: MUImage/images, output_dir: MUImage/audios}
  - {name: muvideo, format: instruct, modality: video, annotations: MUVideo/MUVideoInstructions.json, media_dir: MUVideo/videos, output_dir: MUVideo/audios}
  - {name: muedit, format: instruct, modality: audio, annotations: MUEdit/MUEditInstructions.json, media_dir: MUEdit/audios, output_dir: MUEdit/audios, captions: MUEdit/captions.json}
"""


def _conv(*pairs, key="conversation", caption=None, roles=("human", "gpt")):
    turns = []
    for q, a in pairs:
        turns += [{"from": roles[0], "value": q}, {"from": roles[1], "value": a}]
    if caption is not None:
        turns[-1]["caption"] = caption
    return {key: turns}


def write_media(folder: Path) -> dict[str, Path]:
    """melody.wav (0.5 s, 24 kHz mono), image.png (32 x 32), video.mp4 (8 frames, 32 x 32)."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(12000) / 24000
    wave = 0.5 * np.sin(2 * np.pi * 440 * t) * np.linspace(1, 0, t.size)
    sf.write(folder / "melody.wav", wave.astype(np.float32), 24000, subtype="PCM_16")
    yy, xx = np.mgrid[0:32, 0:32]
    rgb = np.stack([8 * xx, 8 * yy, np.full_like(xx, 128)], axis=-1).astype(np.uint8)  # (H, W, 3)
    Image.fromarray(rgb).save(folder / "image.png")
    frames = [np.roll(rgb, 4 * i, axis=1) for i in range(8)]
    write_video(folder / "video.mp4", frames, fps=8)
    return {"audio": folder / "melody.wav", "image": folder / "image.png",
            "video": folder / "video.mp4"}


def _place(src: Path, folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(src, folder / name)


def _dump(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def write_fixture_datasets(root: Path) -> Path:
    """Write every fixture dataset and data.yaml under `root`; returns the config path."""
    root = Path(root)
    media = write_media(root / "_media")
    audio, image, video = media["audio"], media["image"], media["video"]

    # ---- caption sets: {file_name: caption}
    _place(audio, root / "MUCaps/audios", "mc0.wav", "mc1.wav", "mc2.wav")
    _dump(root / "MUCaps/MUCapsCaptions.json", {
        "mc0.wav": "A calm piano melody in C major with soft strings.",
        "mc1.wav": "An energetic rock song with electric guitar and drums.",
        "mc2.wav": "   ",                                      # empty caption
        "mc3.wav": "A jazz trio with a walking bass line.",    # media file missing
    })
    _place(image, root / "COCO/images", "c0.png", "c1.png")
    _dump(root / "COCO/captions.json", {
        "c0.png": "A house with a red roof next to a tree.",
        "c1.png": "Two dogs playing in a park.",
        "c2.png": "A beach at sunset.",                        # media file missing
    })
    _place(video, root / "MUVideo/videos", "v0.mp4", "v1.mp4")
    _dump(root / "MUVideo/captions.json", {
        "v0.mp4": "A red ball bounces across a gradient.",
        "v1.mp4": "A car driving at night through a busy city street.",
    })

    # ---- MusicQA
    _place(audio, root / "MusicQA/audios", "q0.wav", "q1.wav", "q2.wav")
    _dump(root / "MusicQA/MusicQA.json", [
        {"audio_name": "q0.wav", **_conv(("What is the tempo of this song?", "It is slow, about 70 BPM."))},
        {"audio_name": "q1.wav", **_conv(("Which instruments can you hear?", "A piano and a violin."),
                                         ("Which one carries the melody?", "The violin."),
                                         key="conversations")},
        {"audio_name": "q2.wav", "conversation": [                 # bad conversation order
            {"from": "gpt", "value": "Hello."}, {"from": "human", "value": "Describe the music."}]},
        {"audio_name": "missing.wav", **_conv(("What is the genre?", "Jazz."))},  # media missing
        "not a record",                                            # malformed record
    ])

    # ---- Alpaca, both layouts
    _dump(root / "Alpaca/alpaca.json", [
        {"instruction": "Give three tips for staying healthy.", "input": "",
         "output": "Eat well, sleep enough and exercise."},
        {"instruction": "Translate the sentence to French.", "input": "I like music.",
         "output": "J'aime la musique."},
        {"conversations": [{"from": "human", "value": "Write a short poem about the sea."},
                           {"from": "gpt", "value": "Waves of blue, a song so true."}]},
        {"conversation": [{"from": "user", "value": "What is 2 + 2?"},
                          {"from": "assistant", "value": "4."},
                          {"from": "user", "value": "And times 3?"},
                          {"from": "assistant", "value": "12."}]},
        {"instruction": "Say nothing.", "input": "", "output": ""},  # empty answer
        {"instruction": "No output key here."},                      # malformed record
    ])

    # ---- MUImage (image -> music)
    _place(image, root / "MUImage/images", "i0.png", "i1.png", "i3.png")
    _place(audio, root / "MUImage/audios", "o0.wav", "o1.wav")
    _dump(root / "MUImage/MUImageInstructions.json", [
        {"input_file": "i0.png", "output_file": "o0.wav",
         **_conv(("Generate a music for this image.", "Here is a calm piano piece for the house."),
                 caption="A calm piano piece with soft strings.")},
        {"input_file": "i1.png", "output_file": "o1.wav",
         **_conv(("Compose music for this picture.", "A playful tune for the dogs."),
                 key="conversations", caption="A playful ukulele tune.",
                 roles=("user", "assistant"))},
        {"input_file": "i2.png", "output_file": "o2.wav",             # media file missing
         **_conv(("Music for this image?", "Sure."), caption="Ambient pads.")},
        {"input_file": "i3.png", "output_file": "o3.wav",             # no caption, no captions file
         **_conv(("Music for this image?", "Sure."))},
    ])

    # ---- MUVideo (video -> music), one multi-turn
    _place(audio, root / "MUVideo/audios", "vo0.wav", "vo1.wav")
    _dump(root / "MUVideo/MUVideoInstructions.json", [
        {"input_file": "v0.mp4", "output_file": "vo0.wav",
         **_conv(("Compose music for this video.", "Bouncy music for a bouncing ball."),
                 caption="A bouncy electronic tune.")},
        {"input_file": "v1.mp4", "output_file": "vo1.wav",
         **_conv(("What happens in this video?", "A car drives through a city at night."),
                 ("Now write music for it.", "Dark synth music for the night drive."),
                 caption="A dark synthesizer track at 100 BPM.")},
    ])

    # ---- MUEdit (music -> music), captions file for records without a caption
    _place(audio, root / "MUEdit/audios", "e0.wav", "e1.wav", "e2.wav", "e3.wav",
           "t0.wav", "t1.wav", "t2.wav")
    _dump(root / "MUEdit/MUEditInstructions.json", [
        {"input_file": "e0.wav", "output_file": "t0.wav",
         **_conv(("Make the music faster.", "Here is a faster version."),
                 caption="A fast piano melody.")},
        {"input_file": "e1.wav", "output_file": "t1.wav",              # caption from captions.json
         **_conv(("Replace the piano with a violin.", "Here it is with a violin."))},
        {"input_file": "e2.wav", "output_file": "t2.wav",              # no caption anywhere
         **_conv(("Add drums.", "Drums added."))},
        {"input_file": "e3.wav", "output_file": "t0.wav", "conversation": [  # bad order
            {"from": "human", "value": "Add bass."}, {"from": "human", "value": "Please."}]},
    ])
    _dump(root / "MUEdit/captions.json", {"t1.wav": "A slow violin melody in D minor."})

    config = root / "data.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    return config
