"""The annotation files of one split, in the published layouts `llama/data/formats.py` reads,
together with the ground-truth records of `world.json` (made in the same pass, so they agree).

    MUCaps/MUCapsCaptions.json      {"p000000.wav": caption}                      (audio/)
    COCO/captions.json              COCO's own {"images": [...], "annotations": [...]}   (images/)
    MUVideo/captions.json           {"p000000.mp4": caption}                      (videos/)
    MusicQA/MusicQA.json            [{"audio_name", "conversation": [human, gpt]}]  5 per piece
    Alpaca/alpaca_data.json         [{"instruction", "input": "", "output"}]       1 per piece
    MUImage/MUImageInstructions.json  [{"input_file": png, "output_file": wav,
                                        "conversation": [human, gpt + "caption"]}]
    MUVideo/MUVideoInstructions.json  the same with an mp4 input
    MUEdit/MUEditInstructions.json    [{"input_file": wav, "output_file": edited wav,
                                        "conversation": [human, gpt]}]; captions in
    MUEdit/captions.json              {wav: caption} for every source and target
"""
from __future__ import annotations

from .plan import Item, music_attributes
from .render import (AUDIO_DIR, IMAGE_DIR, VIDEO_DIR, audio_name, edit_audio_name, picture_name,
                     video_name)
from .world import PICTURE_SIZE, picture_attributes

MUCAPS, COCO, MUVIDEO_CAPS = "MUCaps/MUCapsCaptions.json", "COCO/captions.json", "MUVideo/captions.json"
MUSICQA, ALPACA = "MusicQA/MusicQA.json", "Alpaca/alpaca_data.json"
MUIMAGE, MUVIDEO, MUEDIT = ("MUImage/MUImageInstructions.json", "MUVideo/MUVideoInstructions.json",
                            "MUEdit/MUEditInstructions.json")
MUEDIT_CAPTIONS = "MUEdit/captions.json"

DATA_YAML = """\
# Synthetic music world (python -m DataSet.synth), split {split}, seed {seed}, size {size}.
# Paths are relative to this file; world.json holds the truth of every record.
stage1:
  - {{name: mucaps, format: captions, modality: audio, annotations: {MUCAPS}, media_dir: {AUDIO_DIR}}}
  - {{name: coco, format: captions, modality: image, annotations: {COCO}, media_dir: {IMAGE_DIR}}}
  - {{name: muvideo_caps, format: captions, modality: video, annotations: {MUVIDEO_CAPS}, media_dir: {VIDEO_DIR}}}
stage2:
  - {{name: mucaps, format: captions, modality: audio, annotations: {MUCAPS}, media_dir: {AUDIO_DIR}}}
stage3:
  - {{name: mucaps, format: captions, modality: audio, annotations: {MUCAPS}, media_dir: {AUDIO_DIR}}}
  - {{name: coco, format: captions, modality: image, annotations: {COCO}, media_dir: {IMAGE_DIR}}}
  - {{name: muvideo_caps, format: captions, modality: video, annotations: {MUVIDEO_CAPS}, media_dir: {VIDEO_DIR}}}
  - {{name: mucaps_generate, format: captions, modality: audio, task: generate, annotations: {MUCAPS}, media_dir: {AUDIO_DIR}}}
  - {{name: musicqa, format: musicqa, annotations: {MUSICQA}, media_dir: {AUDIO_DIR}}}
  - {{name: alpaca, format: alpaca, annotations: {ALPACA}}}
  - {{name: muimage, format: instruct, modality: image, annotations: {MUIMAGE}, media_dir: {IMAGE_DIR}, output_dir: {AUDIO_DIR}}}
  - {{name: muvideo, format: instruct, modality: video, annotations: {MUVIDEO}, media_dir: {VIDEO_DIR}, output_dir: {AUDIO_DIR}}}
  - {{name: muedit, format: instruct, modality: audio, annotations: {MUEDIT}, media_dir: {AUDIO_DIR}, output_dir: {AUDIO_DIR}, captions: {MUEDIT_CAPTIONS}}}
"""
# dataset name -> stages that read it (as DATA_YAML lists them). Stage 3 replays the captions of
# stages 1 and 2 beside the published instruction sets: without them the tiny model forgets how
# to describe music (held-out captions fell from 0.48 to 0.13) and writes no text before [AUD].
# Our choice for the world, not the published recipe (whose stage 3 has the five sets only).
STAGES = {"mucaps": [1, 2, 3], "coco": [1, 3], "muvideo_caps": [1, 3], "mucaps_generate": [3],
          "musicqa": [3], "alpaca": [3], "muimage": [3], "muvideo": [3], "muedit": [3]}


def data_yaml(split: str, seed: int, size: int) -> str:
    return DATA_YAML.format(split=split, seed=seed, size=size, MUCAPS=MUCAPS, COCO=COCO,
                            MUVIDEO_CAPS=MUVIDEO_CAPS, MUSICQA=MUSICQA, ALPACA=ALPACA,
                            MUIMAGE=MUIMAGE, MUVIDEO=MUVIDEO, MUEDIT=MUEDIT,
                            MUEDIT_CAPTIONS=MUEDIT_CAPTIONS, AUDIO_DIR=AUDIO_DIR,
                            IMAGE_DIR=IMAGE_DIR, VIDEO_DIR=VIDEO_DIR)


def _conv(question: str, answer: str, caption: str | None = None) -> list[dict]:
    gpt = {"from": "gpt", "value": answer}
    if caption is not None:
        gpt["caption"] = caption
    return [{"from": "human", "value": question}, gpt]


def _record(dataset: str, key, piece: str, **fields) -> dict:
    return {"sample_id": f"{dataset}:{key}", "dataset": dataset, "stages": STAGES[dataset],
            "piece": piece, **fields}


def build_annotations(items: list[Item]) -> tuple[dict[str, object], list[dict]]:
    """({relative path: JSON object}, world.json records) for the split's items."""
    mucaps, coco_images, coco_anns, video_caps = {}, [], [], {}
    musicqa, alpaca, muimage, muvideo, muedit, edit_captions = [], [], [], [], [], {}
    records = []
    for n, it in enumerate(items):
        wav, edit_wav, png, mp4 = audio_name(it), edit_audio_name(it), picture_name(it), video_name(it)
        truth, edit_id = music_attributes(it.piece), f"{it.id}_edit"

        mucaps[wav] = it.caption
        for name in ("mucaps", "mucaps_generate"):     # the same file, read as captioning and as generation
            records.append(_record(name, wav, it.id, file=f"{AUDIO_DIR}/{wav}", caption=it.caption,
                                   attributes=truth))
        coco_images.append({"id": n, "file_name": png, "width": PICTURE_SIZE, "height": PICTURE_SIZE})
        coco_anns.append({"id": n, "image_id": n, "caption": it.picture_caption})
        records.append(_record("coco", n, it.id, file=f"{IMAGE_DIR}/{png}", caption=it.picture_caption,
                               attributes=picture_attributes(it.piece)))
        video_caps[mp4] = it.video_caption
        records.append(_record("muvideo_caps", mp4, it.id, file=f"{VIDEO_DIR}/{mp4}",
                               caption=it.video_caption,
                               attributes={"colour": picture_attributes(it.piece)["colour"],
                                           "shade": picture_attributes(it.piece)["shade"],
                                           "tempo": it.piece.tempo}))

        for qa in it.qa:
            records.append(_record("musicqa", len(musicqa), it.id, file=f"{AUDIO_DIR}/{wav}",
                                   attribute=qa.kind, instruction=qa.instruction, answer=qa.answer,
                                   attributes=qa.attributes))
            musicqa.append({"audio_name": wav, "conversation": _conv(qa.instruction, qa.answer)})

        a = it.alpaca
        records.append(_record("alpaca", len(alpaca), it.id, kind=a.kind, instruction=a.instruction,
                               answer=a.answer, attributes=a.attributes))
        alpaca.append({"instruction": a.instruction, "input": "", "output": a.answer})

        for name, rows, media, task in (("muimage", muimage, f"{IMAGE_DIR}/{png}", it.image_task),
                                        ("muvideo", muvideo, f"{VIDEO_DIR}/{mp4}", it.video_task)):
            records.append(_record(name, len(rows), it.id, input_file=media, output_file=f"{AUDIO_DIR}/{wav}",
                                   instruction=task.instruction, answer=task.answer, caption=it.caption,
                                   attributes=truth, inferable=["instrument", "tempo", "mode", "mood"]))
            rows.append({"input_file": media.split("/", 1)[1], "output_file": wav,
                         "conversation": _conv(task.instruction, task.answer, it.caption)})

        e = it.edit
        records.append(_record("muedit", len(muedit), edit_id, input_file=f"{AUDIO_DIR}/{wav}",
                               output_file=f"{AUDIO_DIR}/{edit_wav}", source_piece=it.id, kind=e.kind,
                               instruction=e.instruction, answer=e.answer, caption=e.target_caption,
                               attributes=music_attributes(e.target)))
        muedit.append({"input_file": wav, "output_file": edit_wav,
                       "conversation": _conv(e.instruction, e.answer)})
        edit_captions[wav], edit_captions[edit_wav] = it.caption, e.target_caption

    files = {
        MUCAPS: mucaps,
        COCO: {"info": {"description": "Synthetic music world pictures (DataSet.synth)"},
               "images": coco_images, "annotations": coco_anns},
        MUVIDEO_CAPS: video_caps, MUSICQA: musicqa, ALPACA: alpaca, MUIMAGE: muimage,
        MUVIDEO: muvideo, MUEDIT: muedit, MUEDIT_CAPTIONS: edit_captions,
    }
    return files, records


def world_pieces(items: list[Item]) -> dict[str, dict]:
    """{piece id: truth}: every item's piece and its edited piece ("ID_edit")."""
    out = {}
    for it in items:
        out[it.id] = {**music_attributes(it.piece), "melody_seed": it.piece.melody_seed,
                      "seconds": it.piece.seconds}
        out[f"{it.id}_edit"] = {**music_attributes(it.edit.target),
                                "melody_seed": it.edit.target.melody_seed,
                                "seconds": it.edit.target.seconds}
    return out


def world_media(items: list[Item]) -> dict[str, dict]:
    """{relative media path: {"modality", "piece", ...what it shows}} for every media file."""
    out = {}
    for it in items:
        pic = picture_attributes(it.piece)
        out[f"{AUDIO_DIR}/{audio_name(it)}"] = {"modality": "audio", "piece": it.id}
        out[f"{AUDIO_DIR}/{edit_audio_name(it)}"] = {"modality": "audio", "piece": f"{it.id}_edit"}
        out[f"{IMAGE_DIR}/{picture_name(it)}"] = {"modality": "image", "piece": it.id, **pic}
        out[f"{VIDEO_DIR}/{video_name(it)}"] = {"modality": "video", "piece": it.id,
                                                "colour": pic["colour"], "shade": pic["shade"],
                                                "tempo": it.piece.tempo}
    return out
