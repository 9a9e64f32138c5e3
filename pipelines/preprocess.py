"""The preprocessing pipeline on Ray Data: WebVid-style CSV + videos -> Parquet clips.

0. The CSV is split into shards of ``output.shard_rows`` rows (:mod:`pipelines.shards`);
   rows sharing a videoid are found (``input.dedupe``).
1. Shard by shard, streaming: decode (CPU tasks) -> motion scores (CPU tasks for Farneback,
   an actor pool for RAFT) -> caption embeddings and optional VAE latents / DINOv2 tokens
   (actor pools, GPUs when configured) -> ``OUT/_staging/shard=N/*.parquet`` (clip rows and
   error rows), then the shard's done-marker. Nothing but small score columns reaches the driver.
2. Bin edges from the quantiles of the staged scores (or an earlier run's
   ``intensity_bins.json``) -> ``intensity_level`` -> ``OUT/clips/``; error rows ->
   ``OUT/errors/``; then ``summary.json``, ``intensity_bins.json``, ``dataset.json`` and
   ``intensity_hist.png``; the scratch folders are removed.

An existing non-empty ``OUT`` is refused unless ``output.overwrite`` (start over) or
``output.resume`` (skip the shards an interrupted run finished). A run in which no row gives a
clip still writes ``errors/`` and ``summary.json``, then raises :class:`NoClipsError`.
"""

from __future__ import annotations

import io
import json
import posixpath
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import ray
from ray.data.expressions import col

from common.config import ConfigError, JobFailed
from common.resources import Demand, check_fits, cluster_nodes
from pipelines import shards, storage
from pipelines.config import WEBVID_COLUMNS, InputConfig, PreprocessConfig
from pipelines.fetch import fetch_http
from pipelines.dataset import ARRAY_COLUMNS, CLIP_COLUMNS, ERROR_COLUMNS, FrozenEncoders, array_specs, dataset_info, tensor_columns
from pipelines.motion import (
    RaftScorer, add_levels, bins_info, compute_bin_edges, edges_from_info, histogram_png, intensity_value, score_batch_farneback,
)
from pipelines.video import RowError, decode_batch, pick_one_per_videoid


class CsvError(ConfigError):
    """The input CSV cannot be used at all (unreadable, or a WebVid column is missing)."""


def _fetch_csv(uri: str, input_cfg: InputConfig, header_only: bool = False) -> bytes:
    try:
        return fetch_http(uri, input_cfg.fetch_timeout_s, input_cfg.fetch_retries, input_cfg.fetch_deadline_s, None,
                          first_line=header_only)
    except RowError as exc:
        raise CsvError(f"input.csv: cannot fetch {uri!r}: {exc}") from None


def check_csv(uri: str, input_cfg: InputConfig) -> list[str]:
    """Read only the CSV header (over HTTP too: the body is not downloaded); raise CsvError if it
    is unreadable or lacks a column the video source needs. Returns the WebVid columns it has."""
    try:
        if uri.startswith(("http://", "https://")):
            stream: Any = io.BytesIO(_fetch_csv(uri, input_cfg, header_only=True))
        else:
            fs, path = storage.filesystem(uri)
            stream = fs.open_input_stream(path)
        with stream:
            reader = pacsv.open_csv(stream, convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
            names = reader.schema.names
    except (OSError, pa.ArrowInvalid, FileNotFoundError) as exc:
        raise CsvError(f"input.csv: cannot read {uri!r} as CSV: {str(exc).splitlines()[0]}") from None
    needed = input_cfg.required_fields()
    missing = [c for c in needed if c not in names]
    if missing:
        source = "input.video_root" if input_cfg.uses_video_root else "contentUrl"
        raise CsvError(
            f"input.csv: {uri!r} lacks column(s) {', '.join(missing)}; has {', '.join(names)}; "
            f"videos found by {source} need {', '.join(needed)} (WebVid columns: {', '.join(WEBVID_COLUMNS)})"
        )
    return [c for c in WEBVID_COLUMNS if c in names]


def read_rows(cfg: PreprocessConfig, columns: list[str] | None = None) -> ray.data.Dataset:
    """The CSV's WebVid ``columns`` (default: those it has) as a dataset of strings, so an
    empty or odd cell never breaks parsing."""
    uri = cfg.input.csv
    columns = columns if columns is not None else check_csv(uri, cfg.input)
    convert = _string_columns(columns)
    if uri.startswith(("http://", "https://")):
        ds = ray.data.from_arrow(pacsv.read_csv(_open_csv(cfg), convert_options=convert))
    else:
        ds = ray.data.read_csv(uri, convert_options=convert)
    ds = ds.select_columns(columns)
    if cfg.input.limit is not None:
        ds = ds.limit(cfg.input.limit)
    return ds


def plan_dedupe(folder: str, names: list[str], columns: list[str]) -> tuple[list[str], dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """For the CSV files ``names`` in ``folder`` (the shards): the videoids on more than one row,
    the row kept for each (grouped by the file it came from) and the error rows of the others.

    The driver reads the videoid column with pyarrow (about 20 bytes a row: 200 MB for WebVid-10M;
    a Ray Data groupby would start a hash-shuffle actor per partition, 200 by default, and even a
    plain Ray Data read costs seconds of start-up); only the rows of shared videoids are then read
    in full, and one of each is kept (:func:`pipelines.video.pick_one_per_videoid`).
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    fs, base = storage.filesystem(folder)
    files = pads.dataset([posixpath.join(base, name) for name in names], filesystem=fs,
                         format=pads.CsvFileFormat(convert_options=_string_columns(columns)))
    counts = pc.value_counts(files.to_table(columns=["videoid"]).column("videoid")).to_pylist()
    shared = sorted(str(c["values"]) for c in counts if c["counts"] > 1 and c["values"] not in (None, ""))
    if not shared:
        return [], {}, []
    rows = [{**row, "file": posixpath.basename(fragment.path)}
            for fragment in files.get_fragments()
            for row in fragment.to_table(columns=columns, filter=pc.field("videoid").isin(shared)).to_pylist()]
    kept, errors = pick_one_per_videoid(rows)
    by_file: dict[str, list[dict[str, Any]]] = {}
    for row in kept:
        by_file.setdefault(row["file"], []).append(row)
    return shared, by_file, errors


def apply_dedupe(rows: ray.data.Dataset, shared: list[str], kept: list[dict[str, Any]], columns: list[str]) -> ray.data.Dataset:
    """``rows`` without the shared videoids, plus the ``kept`` rows (of this file)."""
    if not shared:
        return rows
    rows = rows.filter(expr=col("videoid").not_in(shared))
    if not kept:
        return rows
    schema = pa.schema([(c, pa.string()) for c in columns])
    return rows.union(ray.data.from_arrow(pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in kept], schema=schema)))


def check_cluster(cfg: PreprocessConfig) -> None:
    """ConfigError within seconds when the stages cannot run at once on this cluster."""
    demands = [Demand("decode tasks (decode.num_cpus)", cfg.decode.num_cpus)]
    if cfg.flow.backend != "farneback":
        demands.append(Demand("the RAFT actor (flow.num_cpus, flow.num_gpus)", cfg.flow.num_cpus, cfg.flow.num_gpus))
    if cfg.encode.captions or cfg.encode.latents or cfg.encode.image_tokens:
        demands.append(Demand("the encoder actor (encode.num_cpus, encode.num_gpus)", cfg.encode.num_cpus, cfg.encode.num_gpus))
    check_fits(demands, cluster_nodes(), "lower those settings, or run on a cluster that has them")


def csv_folder(cfg: PreprocessConfig) -> str:
    """Folder relative contentUrls are resolved against."""
    uri = cfg.input.csv
    return posixpath.dirname(uri) if "://" in uri else posixpath.dirname(posixpath.abspath(uri))


def add_decode(ds: ray.data.Dataset, cfg: PreprocessConfig) -> ray.data.Dataset:
    """CSV rows -> clip rows / error rows (CPU tasks)."""
    kwargs = {"input_cfg": cfg.input, "clip_cfg": cfg.clip, "csv_dir": csv_folder(cfg)}
    return ds.map_batches(decode_batch, fn_kwargs=kwargs, num_cpus=cfg.decode.num_cpus, batch_size=cfg.decode.batch_size, batch_format="numpy")


def add_motion(ds: ray.data.Dataset, cfg: PreprocessConfig) -> ray.data.Dataset:
    """+ flow_score, ssim_score: Farneback as CPU tasks, RAFT in an actor pool."""
    if cfg.flow.backend == "farneback":
        return ds.map_batches(
            score_batch_farneback, fn_kwargs={"flow_cfg": cfg.flow},
            num_cpus=cfg.decode.num_cpus, batch_size=cfg.decode.batch_size, batch_format="numpy",
        )
    return ds.map_batches(
        RaftScorer,
        fn_constructor_kwargs={"flow_cfg": cfg.flow},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.flow.actors),
        num_cpus=cfg.flow.num_cpus,
        num_gpus=cfg.flow.num_gpus,
        batch_size=cfg.flow.batch_size,
        batch_format="numpy",
    )


def add_encoders(ds: ray.data.Dataset, cfg: PreprocessConfig) -> ray.data.Dataset:
    """+ caption embeddings, VAE latents, DINOv2 tokens, as configured (actor pool)."""
    e = cfg.encode
    if not (e.captions or e.latents or e.image_tokens):
        return ds
    return ds.map_batches(
        FrozenEncoders,
        fn_constructor_kwargs={
            "model_cfg": cfg.model, "captions": e.captions, "latents": e.latents,
            "image_tokens": e.image_tokens, "num_gpus": e.num_gpus,
        },
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=e.actors),
        num_cpus=e.num_cpus,
        num_gpus=e.num_gpus,
        batch_size=e.batch_size,
        batch_format="numpy",
    )


def build_stream(cfg: PreprocessConfig, rows: ray.data.Dataset) -> ray.data.Dataset:
    """Pass 1: decode, score, embed. Returns the lazy dataset of clip and error rows."""
    ds = add_encoders(add_motion(add_decode(rows, cfg), cfg), cfg)
    return ds if cfg.encode.store_frames else ds.drop_columns(["frames"])


def _ok_clip_stats_empty() -> Any:
    return pa.table({"flow_score": pa.array([], pa.float64()), "ssim_score": pa.array([], pa.float64()),
                     "clip_index": pa.array([], pa.int64())}).to_pandas()


def _staged(staging: str, columns: list[str], errors: bool) -> pa.Table:
    """``columns`` of the staged error rows (``errors``) or ok rows: a projected Parquet read on the
    driver (pyarrow reads only these columns), not a Ray Data job (seconds of start-up each)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    fs, path = storage.filesystem(staging)
    wanted = pc.field("error") != "" if errors else pc.field("error") == ""
    return pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=columns, filter=wanted)


def _ok_clip_stats(staging: str) -> Any:
    """Scores and clip_index of the ok clips: the only per-clip data that reaches the driver (24 bytes a clip)."""
    return _staged(staging, ["flow_score", "ssim_score", "clip_index"], errors=False).to_pandas()


def _bin_edges(cfg: PreprocessConfig, flow: np.ndarray, ssim: np.ndarray) -> tuple[list[float], dict[str, Any]]:
    """Bin edges (new quantiles of this dataset, or an earlier run's) and ``intensity_bins.json``."""
    levels, source = cfg.intensity.levels, cfg.intensity.source
    if cfg.intensity.bins is not None:
        earlier = json.loads(storage.read_text(cfg.intensity.bins))
        edges = edges_from_info(earlier, source, levels)
        return edges, bins_info(edges, source, levels, earlier.get("n_clips", 0)) | {"reused_from": cfg.intensity.bins}
    edges = compute_bin_edges(intensity_value(flow, ssim, source), levels) if len(flow) else []
    return edges, bins_info(edges, source, levels, len(flow))


def _write_errors(staging: str | None, out: str, extra: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, Any] | None]:
    """Error rows of the stream and ``extra`` ones -> ``OUT/errors/errors.parquet`` (an empty
    table when there are none); returns counts by reason and the first error row."""
    schema = pa.schema([(c, pa.string()) for c in ERROR_COLUMNS])
    tables = [_staged(staging, ERROR_COLUMNS, errors=True).cast(schema)] if staging is not None else []
    merged = pa.concat_tables([*tables, pa.Table.from_pylist(extra, schema=schema)])
    buf = pa.BufferOutputStream()
    pq.write_table(merged, buf)
    storage.write_bytes(storage.join(out, "errors", "errors.parquet"), buf.getvalue().to_pybytes())
    counts = merged.column("error").value_counts().to_pylist() if merged.num_rows else []
    first = merged.slice(0, 1).to_pylist()[0] if merged.num_rows else None
    return {str(c["values"]): int(c["counts"]) for c in counts}, first


class NoClipsError(JobFailed):
    """The run ended with no clip at all (every row an error, or no rows); its error table and
    summary are written before this is raised."""


def run(cfg: PreprocessConfig) -> dict[str, Any]:
    """Run both passes and write the dataset; returns the summary (also in ``summary.json``).

    Pass 1 runs shard by shard (:mod:`pipelines.shards`); with ``output.resume`` a re-run
    skips the shards an earlier, interrupted run finished. Raises :class:`NoClipsError` after
    writing ``errors/`` and ``summary.json`` when no row gave a clip.
    """
    out = cfg.output.dir.rstrip("/")
    exists = storage.is_nonempty_dir(out)
    index = shards.read_index(out) if exists and cfg.output.resume else None
    if exists and index is None and not cfg.output.overwrite:
        hint = " (it holds no interrupted run to resume)" if cfg.output.resume else " or --output.resume true to continue an interrupted run"
        raise ConfigError(f"output.dir: {out} exists and is not empty; pass --output.overwrite true to replace it{hint}")
    if index is not None and index.get("shard_rows") != cfg.output.shard_rows:
        raise ConfigError(f"output.shard_rows: the run to resume in {out} used {index.get('shard_rows')}, got {cfg.output.shard_rows}")
    # every check before anything is deleted or started
    if cfg.check_resources:
        check_cluster(cfg)
    columns = check_csv(cfg.input.csv, cfg.input)
    specs = array_specs(cfg)  # fails early if an encoder's config cannot be found
    if cfg.intensity.bins is not None:
        edges_from_info(json.loads(storage.read_text(cfg.intensity.bins)), cfg.intensity.source, cfg.intensity.levels)

    started = time.perf_counter()
    if index is None:
        if exists:
            storage.remove(out)
        index = shards.split_csv(_open_csv(cfg), columns, out, cfg.output.shard_rows, cfg.input.limit)
    columns = index["columns"]
    done = shards.finished(out, index)
    rows_in = index["rows"]

    # Pass 1, shard by shard: decode, score, embed -> staging; a marker after each shard's write.
    shared: list[str] = []
    kept: dict[str, list[dict[str, Any]]] = {}
    duplicates: list[dict[str, Any]] = []
    if cfg.input.dedupe and rows_in:
        shared, kept, duplicates = plan_dedupe(shards.input_dir(out), [f"{s['name']}.csv" for s in index["shards"]], columns)
    todo = [s for s in index["shards"] if s["name"] not in done]
    if done:
        print(f"preprocess: resuming {out}: {len(done)} of {len(index['shards'])} shards done before, {len(todo)} to go", flush=True)
    for number, shard in enumerate(todo, 1):
        shard_started = time.perf_counter()
        target = shards.staging_dir(out, shard["name"])
        storage.remove(target)  # what an interrupted run left of this shard
        path = shards.shard_csv(out, shard["name"])
        rows = apply_dedupe(ray.data.read_csv(path, convert_options=_string_columns(columns)), shared,
                            kept.get(posixpath.basename(path), []), columns)
        build_stream(cfg, rows).write_parquet(target, min_rows_per_file=cfg.output.rows_per_file)
        shards.mark_finished(out, shard, time.perf_counter() - shard_started)
        if len(index["shards"]) > 1:
            print(f"preprocess: shard {shard['name']} done ({number}/{len(todo)} this run, {shard['rows']} rows, "
                  f"{time.perf_counter() - shard_started:.1f} s)", flush=True)
    pass1_s = time.perf_counter() - started

    # Pass 2: levels; split clips and errors.
    staging = storage.join(out, "_staging")
    has_staging = _has_parquet(staging)
    stats = _ok_clip_stats(staging) if has_staging else _ok_clip_stats_empty()
    flow, ssim = stats["flow_score"].to_numpy(), stats["ssim_score"].to_numpy()
    edges, bins = _bin_edges(cfg, flow, ssim)
    keep = CLIP_COLUMNS + [c for c in ARRAY_COLUMNS if c in specs]
    storage.remove(storage.join(out, "clips"))  # a resumed run that died in pass 2 rewrites it whole
    if len(stats):
        (
            ray.data.read_parquet(staging)
            .filter(expr=col("error") == "")
            .map_batches(add_levels, fn_kwargs={"edges": edges, "source": cfg.intensity.source}, batch_format="numpy")
            .select_columns(keep)
            .map_batches(tensor_columns, fn_kwargs={"specs": specs}, batch_format="numpy")
            .write_parquet(storage.join(out, "clips"), min_rows_per_file=cfg.output.rows_per_file)
        )
    by_error, first_error = _write_errors(staging if has_staging else None, out, duplicates)
    elapsed = time.perf_counter() - started

    clips_out, rows_ok = len(stats), int((stats["clip_index"] == 0).sum())
    rows_error = sum(by_error.values())
    summary = {
        "rows_in": int(rows_in),
        "rows_ok": int(rows_ok),
        "rows_error": int(rows_error),
        "rows_accounted": int(rows_ok) + rows_error == int(rows_in),
        "clips_out": int(clips_out),
        "errors": dict(sorted(by_error.items())),
        "clips_per_s": round(clips_out / elapsed, 3),
        "pass1_s": round(pass1_s, 2),
        "elapsed_s": round(elapsed, 2),
        "shards": len(index["shards"]),
        "shards_resumed": len(done),
        "intensity": bins,
        "output": out,
    }
    for scratch in ("_staging", "_shards"):  # every row is accounted for: nothing left to resume
        storage.remove(storage.join(out, scratch))
    storage.write_text(storage.join(out, "summary.json"), json.dumps(summary, indent=2))
    if not clips_out:
        raise NoClipsError(_no_clips_message(cfg, summary, first_error))
    storage.write_text(storage.join(out, "intensity_bins.json"), json.dumps(bins, indent=2))
    storage.write_text(storage.join(out, "dataset.json"), json.dumps(dataset_info(cfg, specs, bins), indent=2))
    storage.write_bytes(storage.join(out, "intensity_hist.png"), histogram_png(flow, ssim, edges, cfg.intensity.source))
    return summary


def _string_columns(columns: list[str]) -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(column_types={c: pa.string() for c in columns}, strings_can_be_null=True)


def _open_csv(cfg: PreprocessConfig) -> Any:
    uri = cfg.input.csv
    if uri.startswith(("http://", "https://")):
        return io.BytesIO(_fetch_csv(uri, cfg.input))
    fs, path = storage.filesystem(uri)
    return fs.open_input_stream(path)


def _has_parquet(folder: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(folder)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return False
    return any(f.path.endswith(".parquet") for f in fs.get_file_info(pafs.FileSelector(path, recursive=True)))


def _no_clips_message(cfg: PreprocessConfig, summary: dict[str, Any], first: dict[str, Any] | None) -> str:
    out = summary["output"]
    if not summary["rows_in"]:
        return f"no clips: {cfg.input.csv} has no data rows (summary in {out}/summary.json)"
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(summary["errors"].items(), key=lambda kv: -kv[1]))
    example = f"; e.g. videoid {first['videoid']}: {first['message']}" if first else ""
    return (f"no clips: none of the {summary['rows_in']} rows gave a clip ({reasons}){example}; "
            f"every row's reason is in {out}/errors/errors.parquet, the counts in {out}/summary.json")
