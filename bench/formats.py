"""CSV and Parquet ingest: `evtrack send FILE` against chDB's own plain insert of the same file.

    python bench/formats.py                  # 1,000,000 generated events, 3 rounds
    python bench/formats.py -n 200000 --rounds 1

As bench/ingest.py does for NDJSON, each figure is a whole process over the same file, each into
a fresh store: the plain insert names the column types (``file(path, 'CSVWithNames'|'Parquet',
<typed structure>)`` into a table with the events datasource's columns, engine and key: no checks,
no quarantine, no views), and `evtrack send` (after an untimed deploy) checks every row, quarantines
the bad ones and feeds the materialized pipes. The CSV and Parquet files are made from the NDJSON by
ClickHouse before anything is timed. The rounds alternate the two; the median ratio of throughputs
(evtrack / plain) is what to read.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "fixtures"), str(ROOT / "bench")]

from ingest import _plain_child, evtrack_send, plain_table, timed_process, write_events  # noqa: E402

FORMATS = {"csv": "CSVWithNames", "parquet": "Parquet"}


def convert(ndjson: Path, folder: Path) -> dict[str, Path]:
    import chdb

    _, _, structure = plain_table()
    conn = chdb.connect(":memory:")
    out = {}
    for fmt, name in FORMATS.items():
        out[fmt] = folder / f"events.{fmt}"
        conn.query(f"SELECT * FROM file('{ndjson}', 'JSONEachRow', '{structure}') INTO OUTFILE '{out[fmt]}' "
                   f"FORMAT {name} SETTINGS date_time_input_format = 'best_effort', "
                   "input_format_json_read_objects_as_strings = 1, input_format_json_read_numbers_as_strings = 1")
    conn.close()
    return out


def main() -> None:
    if sys.argv[1:2] == ["--plain"]:
        store, path, fmt = sys.argv[2:5]
        _plain_child(store, path, FORMATS[fmt], settings="")
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="events generated")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="evtrack-formats-") as folder:
        folder = Path(folder)
        ndjson = folder / "events.ndjson"
        write_events(ndjson, args.n)
        files = convert(ndjson, folder)
        for fmt, path in files.items():
            ratios = []
            for round_ in range(args.rounds):
                runs = {}
                for kind in (("plain", "evtrack") if round_ % 2 == 0 else ("evtrack", "plain")):
                    store = folder / f"{fmt}-{kind}-{round_}"
                    runs[kind] = (timed_process([sys.executable, __file__, "--plain", str(store), str(path), fmt])
                                  if kind == "plain" else evtrack_send(path, store))
                ratios.append(runs["plain"].seconds / runs["evtrack"].seconds)
                print(f"{fmt} round {round_ + 1}: plain {runs['plain'].seconds:.2f} s, "
                      f"evtrack {runs['evtrack'].seconds:.2f} s", flush=True)
            print(f"{fmt}: {args.n:,} events, {path.stat().st_size / 1e6:.0f} MB; evtrack / plain throughput, "
                  f"median of {args.rounds}: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
