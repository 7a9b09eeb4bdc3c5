"""Training data: the published dataset formats, the data config, and batching.

    from llama.data import load_stage, encode_sample, collate
    samples, reports = load_stage("data.yaml", stage=1)
    for r in reports: print(r.line())
"""
from .collate import IGNORE, EncodedSample, collate, encode_sample, encode_samples
from .config import load_data_config, load_stage
from .formats import (AUD_RUN, AUD_TOKENS, CAPTION_INSTRUCTIONS, GENERATE_TEMPLATES, DataError,
                      DatasetSpec, LoadReport, Sample, load_dataset, load_datasets, read_json)

__all__ = ["AUD_RUN", "AUD_TOKENS", "CAPTION_INSTRUCTIONS", "GENERATE_TEMPLATES", "IGNORE",
           "DataError", "DatasetSpec", "EncodedSample", "LoadReport", "Sample", "collate",
           "encode_sample", "encode_samples", "load_data_config", "load_dataset", "load_datasets",
           "load_stage", "read_json"]
