"""`inference.py --input requests.jsonl --output-dir D`: the batch job.

Reads the JSONL (each line checked alone), skips what results.jsonl already answers, answers the
rest in batches (llama/batch_runner.py) and appends one record per request in input order; with
several processes (accelerate launch) each writes a part file that rank 0 merges
(llama/distributed_parts.py). Kept out of inference.py so the CLI file stays about options.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def read_requests(path: Path, defaults: dict) -> tuple[list[tuple], list[str]]:
    """Parse the JSONL into (id, Request or RequestError) in file order. Lines without a usable
    id (not JSON, not an object, a duplicate id) are reported with their line number; bytes that
    are not UTF-8 survive (surrogate-escaped) so that their request fails alone, by id."""
    from llama.errors import UserError, one_line
    from llama.request_schema import RequestError, from_json, request_id

    entries, problems, seen = [], [], set()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror or e})") from None
    for n, raw_line in enumerate(data.split(b"\n"), 1):
        line = raw_line.decode("utf-8", "surrogateescape")
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"{path}:{n}: invalid JSON ({e.msg})")
            continue
        if not isinstance(raw, dict):
            problems.append(f"{path}:{n}: needs a JSON object, got {type(raw).__name__}")
            continue
        try:
            rid = request_id(raw, n)
        except RequestError as e:
            problems.append(f"{path}:{n}: {e}")
            continue
        if rid in seen:
            problems.append(f"{path}:{n}: duplicate id {one_line(repr(rid), 80)}")
            continue
        seen.add(rid)
        try:
            entries.append((rid, from_json(raw, rid, defaults, path.parent)))
        except RequestError as e:
            e.prompt = raw.get("prompt") if isinstance(raw.get("prompt"), str) else None
            entries.append((rid, e))
    return entries, problems


def run_batch(args, load_pipeline, display_text, default_ckpt: Path) -> int:
    """Answer a JSONL; under `accelerate launch` each process answers its share into a part file
    that rank 0 merges (llama/distributed_parts.py). load_pipeline(args) and display_text(text)
    are the CLI's own (tests replace the loader)."""
    from llama.distributed_parts import Ranks

    ranks = Ranks.from_env()
    args.device = ranks.device(args.device)
    ranks.start()
    try:
        return _run_batch(args, ranks, load_pipeline, display_text, default_ckpt)
    finally:
        ranks.stop()


def _run_batch(args, ranks, load_pipeline, display_text, default_ckpt: Path) -> int:
    from tqdm import tqdm

    from llama.batch_runner import BatchSettings, run_in_order
    from llama.distributed_parts import merge_parts, run_lock
    from llama.errors import UserError, one_line
    from llama.request_schema import GEN_FIELDS
    from llama.safe_paths import Journal, OutputError, SafeNames, clean_stale_temps, ensure_writable_dir, inside, write_wav

    out_dir = ensure_writable_dir(args.output_dir)
    say = (lambda msg: print(msg, file=sys.stderr)) if ranks.main else (lambda msg: None)
    with run_lock(ranks, out_dir):
        entries, problems = read_requests(args.input, {k: getattr(args, k) for k in GEN_FIELDS})
        order = {rid: n for n, (rid, _) in enumerate(entries)}
        journal = Journal(out_dir / "results.jsonl")
        if ranks.main:                       # repairs happen here, before any rank reads or writes
            stale = clean_stale_temps(out_dir)
            merged, dropped = merge_parts(out_dir, order)
            records, torn, unreadable = journal.read()
            for msg in problems:
                say(f"skipped: {one_line(msg)}")
            if merged or dropped:
                say(f"{out_dir}: merged {merged} records left in part files by an interrupted run "
                    f"({dropped} torn or unreadable lines dropped; those requests run again)")
            if torn or unreadable or stale:
                say(f"{journal.path}: repaired {torn} torn last line, {unreadable} unreadable lines ignored, "
                    f"{stale} stale temp files removed; those requests run again")
            if args.ckpt_dir is None and ranks.world > 1:
                from llama.tiny import ensure_tiny_bundle
                ensure_tiny_bundle(default_ckpt)            # built once, not by every rank at once
        ranks.barrier()
        if not ranks.main:
            records = journal.read()[0]
        names = SafeNames()
        wav_name = {rid: names(rid) for rid, _ in entries}     # file order: stable across reruns
        done = {str(r.get("id")) for r in records if r.get("error") is None}
        todo = [(rid, req) for rid, req in entries if rid not in done]
        say(f"{len(entries)} requests: {len(entries) - len(todo)} already done, {len(todo)} to run, "
            f"{len(problems)} unreadable lines skipped" + (f"; {ranks.world} processes" if ranks.world > 1 else ""))
        mine, failed, pipe = ranks.share(todo), 0, None

        def get_pipe():
            nonlocal pipe
            if pipe is None:
                pipe = load_pipeline(args)
                if args.compile:
                    from llama.compiled_decode import CompiledDecode
                    settings.decode_step = CompiledDecode.for_model(pipe.model)
            return pipe

        def emit(rid, req, res):
            nonlocal failed
            rec = {"id": rid, "wav": None, "prompt": getattr(req, "prompt", None), "answer": None, "error": None}
            if isinstance(res, OutputError):
                raise res                            # disk full, folder gone: no later request can be kept
            if isinstance(res, UserError):           # this request's fault: record it, go on
                failed += 1
                rec["error"] = one_line(str(res))
                print(f"request {one_line(rid, 80)}: {rec['error']}", file=sys.stderr)
            else:
                rec["answer"] = res.text
                rec["timings"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in res.timings.items()}
                if res.audio is not None:
                    write_wav(inside(out_dir, wav_name[rid]), res.audio, res.sample_rate)
                    rec["wav"], rec["sample_rate"] = wav_name[rid], res.sample_rate
                    rec["audio_seconds"] = round(len(res.audio) / res.sample_rate, 4)
            part.append(rec)
            if rec["error"] is None:
                shown = display_text(rec["answer"]).replace("\n", " / ") or "(no text)"
                print(f"[{one_line(rid, 80)}] {shown}" + (f"  -> {rec['wav']}" if rec["wav"] else ""))

        settings = BatchSettings(batch_size=args.batch_size)
        if mine:
            part = Journal(ranks.part(out_dir))
            with part, tqdm(total=len(mine), desc="requests", unit="req", file=sys.stderr,
                            disable=not ranks.main) as bar:
                run_in_order(mine, get_pipe, settings, emit, bar)
        ranks.barrier()
        if ranks.world > 1 and ranks.main:
            merged, dropped = merge_parts(out_dir, order)
            say(f"merged {merged} records of {ranks.world} processes -> {journal.path}")
    if todo:
        where = ranks.part(out_dir)
        print(f"done: {len(mine) - failed} answered, {failed} failed -> {where}", file=sys.stderr)
    return 1 if failed or problems else 0
