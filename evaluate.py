"""Scores what `inference.py --input REQ --output-dir DIR` wrote against references.

Answers (BLEU-1..4, METEOR, ROUGE-L, BERTScore):
    python evaluate.py answers --results DIR --references answers.json [--bert-dir roberta-large]
Music (FAD on a model's embeddings, KL over a classifier's labels, CLAP text-audio score):
    python evaluate.py music --results DIR --reference-audio refs/ [--captions captions.json]
        [--embed-model clap-htsat --embed-kind clap] [--classifier ast-audioset] [--clap clap-htsat]
Editing (the same audio metrics, each edit against its own target clip only):
    python evaluate.py edit --results DIR --reference-audio targets.json ...
Synthetic world (DataSet/synth): requests, then both reports against the split's truth:
    python evaluate.py synth-requests --world outputs/synth/world/heldout --out REQ_DIR
    python evaluate.py synth --world outputs/synth/world/heldout --results DIR [model options]
Reports side by side (e.g. a trained model against a random one):
    python evaluate.py compare trained=DIR_A/eval_synth.json random=DIR_B/eval_synth.json
Every model folder is local (transformers format); a metric without its model is reported as
unavailable with the reason. Writes a JSON report (--report, default DIR/eval_<task>.json) and
prints a table.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        from llama.errors import one_line

        self.exit(2, f"error: {one_line(message)} (see --help)\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report", type=Path, help="JSON report path (default RESULTS_DIR/eval_<task>.json)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _text_opts(p):
    p.add_argument("--bert-dir", type=Path, help="local model folder for BERTScore (e.g. roberta-large)")
    p.add_argument("--bert-layers", type=int, help="layer whose states BERTScore compares (default: last)")
    p.add_argument("--wordnet-dir", type=Path, help="WordNet dict folder for METEOR (default: nltk data, "
                                                    "then /usr/share/wordnet)")


def _audio_opts(p):
    p.add_argument("--embed-model", type=Path, help="model folder whose embeddings FAD compares")
    p.add_argument("--embed-kind", choices=("clap", "audio"), default="clap",
                   help="clap: CLAP audio tower; audio: an AutoModel encoder (MERT-like), mean of last layer")
    p.add_argument("--classifier", type=Path, help="ASTForAudioClassification folder for KL")
    p.add_argument("--clap", type=Path, help="CLAP folder for the text-audio score")
    p.add_argument("--window-s", type=float, help="seconds per window (default: the model's input length)")
    p.add_argument("--cache-dir", type=Path, help="keep per-file vectors here (.npy) across runs")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="evaluate.py", description=__doc__.splitlines()[0],
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="task", required=True, parser_class=_Parser)
    a = sub.add_parser("answers", help="text answers vs reference answers")
    a.add_argument("--results", type=Path, required=True, help="inference.py --output-dir (or its results.jsonl)")
    a.add_argument("--references", type=Path, required=True, help="JSON {id: answer} or JSONL")
    _text_opts(a), _common(a)
    for name, what in (("music", "generated music vs reference clips"), ("edit", "edited music vs target clips")):
        m = sub.add_parser(name, help=what)
        m.add_argument("--results", type=Path, required=True)
        m.add_argument("--reference-audio", type=Path, required=True,
                       help="folder of clips (paired by file stem == id) or JSON {id: path}")
        m.add_argument("--captions", type=Path, help="JSON {id: caption} for the CLAP score")
        _audio_opts(m), _common(m)
    s = sub.add_parser("synth", help="both reports on a synthetic-world split")
    s.add_argument("--world", type=Path, required=True, help="a DataSet/synth split folder (world.json)")
    s.add_argument("--results", type=Path, required=True)
    s.add_argument("--n-qa", type=int, default=20)
    s.add_argument("--n-music", type=int, default=10)
    _text_opts(s), _audio_opts(s), _common(s)
    c = sub.add_parser("compare", help="reports side by side, one column each")
    c.add_argument("reports", nargs="+", metavar="NAME=REPORT", help="a name and an evaluate.py JSON report")
    r = sub.add_parser("synth-requests", help="write held-out requests for inference.py")
    r.add_argument("--world", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--n-qa", type=int, default=20)
    r.add_argument("--n-music", type=int, default=10)
    r.add_argument("--duration", type=float, default=2.0)
    return p


def _audio_cfg(args):
    from llama.metrics.audio import AudioConfig

    if args.batch_size < 1:
        raise _user(f"--batch-size {args.batch_size}: must be at least 1")
    return AudioConfig(device=args.device, batch_size=args.batch_size, window_s=args.window_s,
                       cache_dir=args.cache_dir, progress=not args.no_progress)


def _user(msg):
    from llama.errors import UserError

    return UserError(msg)


def _answer_opts(args):
    from llama.metrics.tasks import AnswerOptions

    return AnswerOptions(bert_dir=args.bert_dir, bert_layers=args.bert_layers, wordnet_dir=args.wordnet_dir,
                         device=args.device, batch_size=args.batch_size)


def _music_opts(args):
    from llama.metrics.tasks import MusicOptions

    return MusicOptions(embed_dir=args.embed_model, embed_kind=args.embed_kind, classifier_dir=args.classifier,
                        clap_dir=args.clap, audio=_audio_cfg(args))


def run(args) -> dict[str, dict]:
    """The reports, by name."""
    from llama.metrics import inputs, tasks

    if args.task == "synth-requests":
        from llama.metrics.synth import write_requests

        print(write_requests(args.world, args.out, args.n_qa, args.n_music, args.duration))
        return {}
    if getattr(args, "device", "cpu").startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise _user(f"--device {args.device}: no CUDA device here")
    results = inputs.read_results(args.results)
    if args.task == "answers":
        return {"answers": tasks.evaluate_answers(results, inputs.read_texts(args.references), _answer_opts(args))}
    if args.task in ("music", "edit"):
        by_id, ref_set = inputs.read_audio_refs(args.reference_audio)
        caps = inputs.read_texts(args.captions, "captions") if args.captions else None
        return {args.task: tasks.evaluate_music(results, by_id, ref_set, caps, _music_opts(args),
                                                paired_only=args.task == "edit")}
    from llama.metrics.synth import references

    refs = references(args.world, args.n_qa, args.n_music)
    answers = tasks.evaluate_answers(results, {k: [v] for k, v in refs.answers.items()}, _answer_opts(args))
    music = tasks.evaluate_music(results, refs.audio, list(refs.audio.values()),
                                 {k: [v] for k, v in refs.captions.items()}, _music_opts(args))
    # each sub-report only counts its own kind of request as "not in references"
    answers["skipped"]["not_in_references"] = [i for i in answers["skipped"]["not_in_references"]
                                               if i not in refs.captions]
    music["skipped"]["not_answered"] = [i for i in music["skipped"]["not_answered"] if i in refs.audio]
    return {"synth": {"task": "synth", "world": str(args.world), "answers": answers, "music": music}}


def flatten(report: dict) -> dict:
    """A synth report's two parts as one table column."""
    if report.get("task") != "synth":
        return report
    out = {"metrics": {}, "unavailable": {}, "skipped": {}}
    for part in ("answers", "music"):
        out["metrics"].update(report[part]["metrics"])
        out["unavailable"].update(report[part]["unavailable"])
        out["skipped"].update({f"{part} {k}": v for k, v in report[part]["skipped"].items()})
    return out


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parser().parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()     # 'Loading weights' bars: ours are enough
    from llama.errors import UserError, one_line
    from llama.metrics.report import table, write_json

    try:
        if args.task == "compare":
            print(table({name: flatten(rep) for name, rep in read_reports(args.reports).items()}))
            return 0
        reports = run(args)
        for name, rep in reports.items():
            path = args.report or (inputs_dir(args.results) / f"eval_{name}.json")
            write_json(path, rep)
            print(table({name: flatten(rep)}))
            print(f"report: {path}")
    except UserError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2
    return 0


def read_reports(specs: list[str]) -> dict[str, dict]:
    """NAME=PATH pairs -> {name: report}; a bad pair or file is a one-line error."""
    import json

    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise _user(f"{spec!r}: expected NAME=REPORT.json")
        try:
            report = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise _user(f"{path}: cannot read the report ({getattr(e, 'strerror', None) or type(e).__name__})") from None
        if not isinstance(report, dict) or "metrics" not in report and report.get("task") != "synth":
            raise _user(f"{path}: not an evaluate.py report (no metrics)")
        out[name] = report
    return out


def inputs_dir(results: Path) -> Path:
    return results if results.is_dir() else results.parent


if __name__ == "__main__":
    sys.exit(main())
