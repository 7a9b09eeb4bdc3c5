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

The code is split by concern: `spec` (DatasetSpec and its stage rules, Sample, LoadReport, the
skip reasons, DataError), `parsing` (file reading and the helpers for text, turns, media paths,
instruction picks and the [AUD] run), `readers` (one reader per record layout). This module
ties them together in `load_dataset` and re-exports every public name.
"""
from __future__ import annotations

from typing import Iterable

from .parsing import AUD_RUN, AUD_TOKENS, N_AUD, _Skip, pick, read_json, with_aud_run
from .readers import (CAPTION_INSTRUCTIONS, GENERATE_TEMPLATES, _alpaca_record, _caption_record,
                      _instruct_record, _musicqa_record, _read_captions_file, _records)
from .spec import (BAD_ORDER, EMPTY_ANSWER, EMPTY_CAPTION, EMPTY_INSTRUCTION, FORMATS, MALFORMED,
                   MEDIA_MISSING, MODALITIES, NO_TARGET_CAPTION, TASKS, DataError, DatasetSpec,
                   LoadReport, Sample)

__all__ = ["AUD_RUN", "AUD_TOKENS", "BAD_ORDER", "CAPTION_INSTRUCTIONS", "EMPTY_ANSWER",
           "EMPTY_CAPTION", "EMPTY_INSTRUCTION", "FORMATS", "GENERATE_TEMPLATES", "MALFORMED",
           "MEDIA_MISSING", "MODALITIES", "NO_TARGET_CAPTION", "N_AUD", "TASKS", "DataError",
           "DatasetSpec", "LoadReport", "Sample", "load_dataset", "load_datasets", "pick",
           "read_json", "with_aud_run"]


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
