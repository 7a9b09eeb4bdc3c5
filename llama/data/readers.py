"""One reader per published record layout (captions incl. COCO, musicqa, alpaca, instruct incl.
MUEdit): each turns a raw record into a `Sample` or raises `_Skip(reason)`.

Kept apart from `formats.load_dataset` so that the dispatch and reporting stay small and each
layout's quirks sit in one place.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .parsing import (AUD_RUN, _conversation, _media, _Skip, _text, _turns, pick, read_json,
                      with_aud_run)
from .spec import (EMPTY_ANSWER, EMPTY_CAPTION, EMPTY_INSTRUCTION, MALFORMED, NO_TARGET_CAPTION,
                   DataError, DatasetSpec, Sample)

CAPTION_INSTRUCTIONS = {
    "audio": ["Describe the music.", "What does this music sound like?",
              "Describe this piece of music in detail.", "What can you hear in this music?"],
    "image": ["Describe the image.", "What is in this picture?",
              "Describe this image in detail.", "What can you see in this image?"],
    "video": ["Describe the video.", "What happens in this video?",
              "Describe this video in detail.", "What can you see in this video?"],
}
GENERATE_TEMPLATES = [
    "Generate a music: {caption}",
    "Compose music that matches this description: {caption}",
    "Create a piece of music based on the following description: {caption}",
]


def _records(data: Any, path: Path, fmt: str, limit: int | None) -> list[tuple[str, Any]]:
    """(key, record) pairs in file order: dict keys for {file: caption}, indices for lists."""
    if fmt == "captions" and isinstance(data, dict):
        if isinstance(data.get("annotations"), list) and isinstance(data.get("images"), list):
            pairs = _coco_records(data)
        else:
            pairs = [(str(k), v) for k, v in data.items()]
    elif isinstance(data, list):
        pairs = [(str(i), r) for i, r in enumerate(data)]
    else:
        want = "a JSON object {file: caption} or a list" if fmt == "captions" else "a JSON list"
        raise DataError(f"{path}: expected {want} of {fmt} records, got {type(data).__name__}")
    return pairs if limit is None else pairs[:limit]


def _coco_records(data: dict) -> list[tuple[str, Any]]:
    """COCO captions_*.json -> one {"file", "caption"} record per annotation."""
    files = {img.get("id"): img.get("file_name") for img in data["images"] if isinstance(img, dict)}
    pairs = []
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            pairs.append((str(i), ann))
            continue
        key = str(ann.get("id", i))
        pairs.append((key, {"file": files.get(ann.get("image_id")), "caption": ann.get("caption")}))
    return pairs


_CAPTION_FILE_KEYS = ("file", "file_name", "audio", "image", "video", "audio_name", "image_name",
                      "video_name")


def _caption_record(spec: DatasetSpec, key: str, record: Any, stage: int, sid: str) -> Sample:
    if isinstance(record, dict):  # list layout {"file": ..., "caption": ...}
        name = next((record[k] for k in _CAPTION_FILE_KEYS if k in record), None)
        caption = record.get("caption")
        if name is None or caption is None:
            raise _Skip(MALFORMED)
    else:
        name, caption = key, record
    if not isinstance(name, str) or not name.strip():
        raise _Skip(MALFORMED)
    caption = _text(caption)
    if not caption:
        raise _Skip(EMPTY_CAPTION)
    if spec.stage_task(stage) == "generate":  # text -> music: media is the target, not input
        instruction = pick(GENERATE_TEMPLATES, sid).format(caption=caption)
        target = spec.media_dir / name if spec.media_dir is not None else None
        return Sample(sid, [(instruction, f"{caption} {AUD_RUN}")], target_caption=caption,
                      target_audio=target, dataset=spec.name)
    path = _media(spec.media_dir, name)
    sample = Sample(sid, [(pick(CAPTION_INSTRUCTIONS[spec.modality], sid), caption)],
                    dataset=spec.name)
    setattr(sample, spec.modality, path)
    return sample


def _musicqa_record(spec: DatasetSpec, record: Any, sid: str) -> Sample:
    if not isinstance(record, dict):
        raise _Skip(MALFORMED)
    name = record.get("audio_name", record.get("image_name", record.get("audio")))
    if name is None:
        raise _Skip(MALFORMED)
    turns = _turns(_conversation(record))
    return Sample(sid, turns, audio=_media(spec.media_dir, name), dataset=spec.name)


def _alpaca_record(spec: DatasetSpec, record: Any, sid: str) -> Sample:
    if not isinstance(record, dict):
        raise _Skip(MALFORMED)
    if "conversation" in record or "conversations" in record:
        return Sample(sid, _turns(_conversation(record)), dataset=spec.name)
    if "instruction" not in record or "output" not in record:
        raise _Skip(MALFORMED)
    instruction, extra, output = (_text(record["instruction"]), _text(record.get("input", "")),
                                  _text(record["output"]))
    if extra:
        instruction = f"{instruction}\n\n{extra}" if instruction else extra
    if not instruction:
        raise _Skip(EMPTY_INSTRUCTION)
    if not output:
        raise _Skip(EMPTY_ANSWER)
    return Sample(sid, [(instruction, output)], dataset=spec.name)


def _instruct_record(spec: DatasetSpec, record: Any, sid: str,
                     captions: dict[str, str] | None) -> Sample:
    if not isinstance(record, dict) or "input_file" not in record:
        raise _Skip(MALFORMED)
    output_file = record.get("output_file")
    if output_file is not None and not isinstance(output_file, str):
        raise _Skip(MALFORMED)
    conv = _conversation(record)
    turns = _turns(conv)
    path = _media(spec.media_dir, record["input_file"])
    caption = conv[-1].get("caption")
    caption = caption.strip() if isinstance(caption, str) else ""
    if not caption and captions is not None and output_file:
        found = captions.get(output_file, captions.get(Path(output_file).name))
        caption = found.strip() if isinstance(found, str) else ""
    if not caption:
        raise _Skip(NO_TARGET_CAPTION)
    question, answer = turns[-1]
    turns[-1] = (question, with_aud_run(answer))
    target = spec.output_dir / output_file if spec.output_dir is not None and output_file else None
    sample = Sample(sid, turns, target_caption=caption, target_audio=target, dataset=spec.name)
    setattr(sample, spec.modality, path)
    return sample


def _read_captions_file(path: Path) -> dict[str, str]:
    data = read_json(path)
    if isinstance(data, list):  # [{"file"/"output_file": ..., "caption": ...}]
        out = {}
        for r in data:
            if isinstance(r, dict):
                name = next((r[k] for k in ("output_file",) + _CAPTION_FILE_KEYS if k in r), None)
                if isinstance(name, str) and isinstance(r.get("caption"), str):
                    out[name] = r["caption"]
        return out
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object {{output_file: caption}}, "
                        f"got {type(data).__name__}")
    return data
