"""Read the published training sets into one `Sample` type, counting every record left out.

Formats (the `format` of a `DatasetSpec`):

    captions   MUCaps (music), COCO (images), MUVideo captions (video): a JSON object
               {file_name: caption} plus a media folder. Also read: a list of
               {"file"|"image"|"audio"|"video"|"file_name": ..., "caption": ...}, and COCO's own
               annotation file {"images": [{id, file_name}], "annotations": [{image_id, caption}]}.
    musicqa    MusicQA: a list of {"audio_name", "conversation"|"conversations": [{from, value}]}
               plus an audio folder ("image_name", the key the published loader read, also works).
    alpaca     Alpaca: a list of {"instruction", "input", "output"} (a non-empty input is joined
               as instruction + "\\n\\n" + input) or of {"conversation"|"conversations": [...]}.
    instruct   MUImage / MUVideo / MUEdit: a list of {"input_file", "output_file",
               "conversation"|"conversations": [...]}; the last answer writes music, whose caption
               is the last gpt turn's "caption" or, failing that, the spec's captions file
               {output_file: caption}.

Annotation files are JSON, or JSON Lines when the name ends in .jsonl. `from` is
"human"/"user" (instruction) or "gpt"/"assistant" (answer); turns alternate, human first.

What each stage makes of them (see docs/design.md, "Training stages"):

    stage 1  understanding, media in -> text out. captions -> (instruction, caption) with the
             media as input, the instruction picked from `CAPTION_INSTRUCTIONS[modality]` by a
             hash of the sample id (deterministic, no RNG); musicqa and alpaca as they are.
             Sets that write music (instruct, captions with task "generate") are refused: the
             output projector is not trained in stage 1.
    stage 2  music generation. captions (music only) -> instruction from `GENERATE_TEMPLATES`
             filled with the caption, answer = caption + " [AUD0]...[AUD7]", target_caption =
             caption, no input media; instruct sets as in stage 3. Text-only sets are refused.
    stage 3  everything. captions are captioning (task "caption", the default) or generation
             (task "generate"); instruct sets get " [AUD0]...[AUD7]" appended to the last answer.

Records that cannot be used are skipped and counted by reason in the `LoadReport`, never dropped
silently; an annotation file that cannot be read or parsed is a `DataError` naming the file.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import UserError

N_AUD = 8
AUD_TOKENS = [f"[AUD{i}]" for i in range(N_AUD)]
AUD_RUN = "".join(AUD_TOKENS)  # "[AUD0][AUD1]...[AUD7]", each a single id for the Tokenizer
_AUD_RUN_LOOSE = re.compile(r"\s*".join(re.escape(t) for t in AUD_TOKENS))

FORMATS = ("captions", "musicqa", "alpaca", "instruct")
MODALITIES = ("audio", "image", "video")
TASKS = ("caption", "generate")

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

# Skip reasons (the keys of LoadReport.skipped).
MEDIA_MISSING = "media file missing"
EMPTY_CAPTION = "empty caption"
EMPTY_INSTRUCTION = "empty instruction"
EMPTY_ANSWER = "empty answer"
MALFORMED = "malformed record"
BAD_ORDER = "bad conversation order"
NO_TARGET_CAPTION = "no caption for target music"

_HUMAN, _GPT = ("human", "user"), ("gpt", "assistant")


class DataError(UserError, ValueError):
    """A data file or config that cannot be used; the message is one line naming the file."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class _Skip(Exception):
    def __init__(self, reason: str):
        self.reason = reason


@dataclass
class DatasetSpec:
    """One dataset of a data config. Paths are as given (load_data_config makes them absolute).

    format: captions | musicqa | alpaca | instruct; modality: the input media (captions and
    instruct; musicqa is audio). media_dir: input media; output_dir: target music of instruct
    sets (kept as Sample.target_audio, never opened); captions: {output_file: caption} for
    instruct records without a caption. task: "caption" or "generate" for caption sets (default:
    generate in stage 2, caption otherwise). limit: read only the first N records. weight: a
    sampling weight for the trainer (not used here).
    """

    name: str
    format: str
    annotations: Path
    modality: str | None = None
    media_dir: Path | None = None
    output_dir: Path | None = None
    captions: Path | None = None
    task: str | None = None
    limit: int | None = None
    weight: float = 1.0

    def __post_init__(self):
        for key in ("annotations", "media_dir", "output_dir", "captions"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, Path):
                setattr(self, key, Path(value))

    def problem(self) -> str | None:
        """What is wrong with this spec on its own, or None."""
        if not isinstance(self.name, str) or not self.name:
            return "name must be a non-empty string"
        if self.format not in FORMATS:
            return f"unknown format {self.format!r} (one of {', '.join(FORMATS)})"
        if self.modality is not None and self.modality not in MODALITIES:
            return f"unknown modality {self.modality!r} (one of {', '.join(MODALITIES)})"
        if self.format in ("captions", "instruct") and self.modality is None:
            return f"format {self.format} needs a modality ({', '.join(MODALITIES)})"
        if self.format == "musicqa" and self.modality not in (None, "audio"):
            return "format musicqa is music (modality audio)"
        if self.format == "alpaca" and self.modality is not None:
            return "format alpaca is text only (no modality)"
        if self.task is not None:
            if self.format != "captions":
                return "task applies to format captions only"
            if self.task not in TASKS:
                return f"unknown task {self.task!r} (one of {', '.join(TASKS)})"
        if self.format in ("musicqa", "instruct") and self.media_dir is None:
            return f"format {self.format} needs media_dir"
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit < 0):
            return f"limit must be a non-negative integer, got {self.limit!r}"
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not self.weight > 0:
            return f"weight must be a positive number, got {self.weight!r}"
        return None

    def stage_task(self, stage: int) -> str:
        """caption | generate for caption sets, the format otherwise."""
        if self.format != "captions":
            return self.format
        return self.task or ("generate" if stage == 2 else "caption")

    def stage_problem(self, stage: int) -> str | None:
        """Why this dataset cannot be used in `stage`, or None."""
        if stage not in (1, 2, 3):
            return f"unknown stage {stage!r} (1, 2 or 3)"
        task = self.stage_task(stage)
        writes_music = task in ("generate", "instruct")
        if task == "generate" and self.modality != "audio":
            return f"only music captions can be turned into music generation (modality {self.modality})"
        if task == "caption" and self.media_dir is None:
            return "captioning needs media_dir"
        if stage == 1 and writes_music:
            return "stage 1 is understanding (text out); this set writes music, use stage 2 or 3"
        if stage == 2 and not writes_music:
            what = "captioning" if task == "caption" else f"format {self.format}"
            return f"stage 2 trains music generation; {what} has no music output (use stage 1 or 3)"
        return None


@dataclass
class Sample:
    id: str                       # f"{dataset_name}:{index or key}"
    turns: list[tuple[str, str]]  # (instruction, answer) pairs, >= 1
    audio: Path | None = None     # input media
    image: Path | None = None
    video: Path | None = None
    target_caption: str | None = None   # set for music-generation samples (bridge-loss target)
    target_audio: Path | None = None    # the target music file when known (never opened here)
    dataset: str = ""

    @property
    def writes_music(self) -> bool:
        return self.target_caption is not None


@dataclass
class LoadReport:
    dataset: str
    read: int
    kept: int
    skipped: dict[str, int] = field(default_factory=dict)      # reason -> count
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> up to 3 record ids

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def line(self) -> str:
        """e.g. "mucaps: 1200 read, 1195 kept, 5 skipped (media file missing: 5)"."""
        text = f"{self.dataset}: {self.read} read, {self.kept} kept"
        if self.skipped:
            reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.skipped.items()))
            text += f", {self.n_skipped} skipped ({reasons})"
        return text

    def details(self) -> str:
        """line() plus, per reason, the ids of up to three skipped records."""
        lines = [self.line()]
        for reason, ids in sorted(self.examples.items()):
            lines.append(f"  {reason}: {', '.join(ids)}")
        return "\n".join(lines)

    def _skip(self, reason: str, record_id: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        ids = self.examples.setdefault(reason, [])
        if len(ids) < 3:
            ids.append(record_id)


# ----------------------------------------------------------------------------- reading files


def read_json(path: str | Path) -> Any:
    """The parsed file (JSON, or a list of records for .jsonl); DataError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found" if not p.exists() else f"{p}: not a regular file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: cannot read ({e})") from e
    if p.suffix.lower() == ".jsonl":
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{p}: not valid JSON Lines (line {n}: {e.msg})") from e
        return records
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{p}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from e


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


# ----------------------------------------------------------------------------- record parsing


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Skip(MALFORMED)
    return value.strip()


def _conversation(record: dict) -> list[dict]:
    conv = record.get("conversation", record.get("conversations"))
    if not isinstance(conv, list) or not conv:
        raise _Skip(MALFORMED)
    for turn in conv:
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise _Skip(MALFORMED)
        role = turn.get("from")
        if not isinstance(role, str) or role.lower() not in _HUMAN + _GPT:
            raise _Skip(MALFORMED)
    return conv


def _turns(conv: list[dict]) -> list[tuple[str, str]]:
    """[{from, value}, ...] -> [(instruction, answer), ...]; strict human/gpt alternation."""
    roles = ["human" if t["from"].lower() in _HUMAN else "gpt" for t in conv]
    if len(roles) % 2 or any(r != ("human" if i % 2 == 0 else "gpt") for i, r in enumerate(roles)):
        raise _Skip(BAD_ORDER)
    turns = []
    for q, a in zip(conv[0::2], conv[1::2]):
        question, answer = q["value"].strip(), a["value"].strip()
        if not question:
            raise _Skip(EMPTY_INSTRUCTION)
        if not answer:
            raise _Skip(EMPTY_ANSWER)
        turns.append((question, answer))
    return turns


def _media(media_dir: Path, name: Any) -> Path:
    if not isinstance(name, str) or not name.strip():
        raise _Skip(MALFORMED)
    path = media_dir / name
    if not path.is_file():
        raise _Skip(MEDIA_MISSING)
    return path


def pick(options: list[str], key: str) -> str:
    """A stable choice (same on every run and process, unlike hash()) from `options` by `key`."""
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    return options[int.from_bytes(digest[:8], "big") % len(options)]


def with_aud_run(answer: str) -> str:
    """The answer ending in the canonical " [AUD0]...[AUD7]" run (added, or normalised if the
    eight tokens are already there, possibly with spaces between them)."""
    m = None
    for m in _AUD_RUN_LOOSE.finditer(answer):
        pass
    if m is None:
        return f"{answer} {AUD_RUN}"
    return answer[:m.start()] + AUD_RUN + answer[m.end():]


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


def load_dataset(spec: DatasetSpec, stage: int) -> tuple[list[Sample], LoadReport]:
    """All usable samples of one dataset for `stage`, and the report of what was left out."""
    problem = spec.problem() or spec.stage_problem(stage)
    if problem:
        raise DataError(f"dataset {getattr(spec, 'name', '?')!r} ({spec.annotations}) in stage "
                        f"{stage}: {problem}")
    captions = _read_captions_file(spec.captions) if spec.captions is not None else None
    pairs = _records(read_json(spec.annotations), spec.annotations, spec.format, spec.limit)
    report = LoadReport(spec.name, read=len(pairs), kept=0)
    samples = []
    for key, record in pairs:
        sid = f"{spec.name}:{key}"
        try:
            if spec.format == "captions":
                sample = _caption_record(spec, key, record, stage, sid)
            elif spec.format == "musicqa":
                sample = _musicqa_record(spec, record, sid)
            elif spec.format == "alpaca":
                sample = _alpaca_record(spec, record, sid)
            else:
                sample = _instruct_record(spec, record, sid, captions)
        except _Skip as skip:
            report._skip(skip.reason, sid)
            continue
        samples.append(sample)
    report.kept = len(samples)
    return samples, report


def load_datasets(specs: Iterable[DatasetSpec], stage: int) -> tuple[list[Sample], list[LoadReport]]:
    samples, reports = [], []
    for spec in specs:
        s, r = load_dataset(spec, stage)
        samples += s
        reports.append(r)
    return samples, reports
