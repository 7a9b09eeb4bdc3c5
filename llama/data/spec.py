"""The dataset spec and its stage/task rules, the `Sample` every format is read into, and the
`LoadReport` that counts what was left out.

These are the types the rest of the code (data config, collate, trainer) works with; they live
apart from the record readers so that importing them does not pull in any parsing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

FORMATS = ("captions", "musicqa", "alpaca", "instruct")
MODALITIES = ("audio", "image", "video")
TASKS = ("caption", "generate")

# Skip reasons (the keys of LoadReport.skipped).
MEDIA_MISSING = "media file missing"
EMPTY_CAPTION = "empty caption"
EMPTY_INSTRUCTION = "empty instruction"
EMPTY_ANSWER = "empty answer"
MALFORMED = "malformed record"
BAD_ORDER = "bad conversation order"
NO_TARGET_CAPTION = "no caption for target music"


class DataError(UserError, ValueError):
    """A data file or config that cannot be used; the message is one line naming the file."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


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
