"""`python -m kafka_dataset`: where the op library is looked for, and whether it loads.

`python -m kafka_dataset inspect CHECKPOINT [--servers S] [--config k=v ...] [--json]`: the
offsets a KafkaDataset iterator saved in a checkpoint will read next, per partition, and with
``--servers`` the partitions' live watermarks and the lag (see `kafka_dataset.inspect`).
"""

import argparse
import json
import sys

import tensorflow as tf

import kafka_dataset

EXIT_ERROR = 2
EXIT_PARTIAL = 1


def diagnostics():
    print("kafka_dataset %s (%s)" % (kafka_dataset.__version__, kafka_dataset.__file__))
    print("tensorflow %s" % tf.__version__)
    print("library %s" % kafka_dataset.library_path())
    try:
        print("built for tensorflow %s" % kafka_dataset.built_for_tensorflow())
    except OSError as e:
        print("library not readable: %s" % e)
    try:
        ops = kafka_dataset.load_library()
    except kafka_dataset.LibraryError as e:
        print("NOT LOADED: %s" % e)
        return 1
    print("loaded; op wrapper %s" % ops.kd_kafka_dataset.__name__)
    print("tf.data.KafkaDataset -> %s" % tf.data.KafkaDataset.__qualname__)
    print("tf.compat.v1.data.KafkaDataset -> %s" % tf.compat.v1.data.KafkaDataset.__qualname__)
    return 0


def _key_value(text):
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError("expected key=value, got %r" % text)
    return key.strip(), value


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m kafka_dataset",
        description="Without a command: show where the op library is looked for and whether "
        "it loads.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    inspect = sub.add_parser(
        "inspect",
        help="show the offsets a checkpointed KafkaDataset iterator reads next",
        description="Per partition, the next offset each KafkaDataset iterator saved in "
        "CHECKPOINT will read (TF2 tf.train.Checkpoint or TF1 Saver checkpoints, also of "
        "pipelines such as .map().batch().prefetch()). With --servers, also each partition's "
        "low/high watermark and lag = high - next offset. Exit status: 0 ok; 1 some "
        "partitions' watermarks could not be read; 2 error.",
    )
    inspect.add_argument(
        "checkpoint", metavar="CHECKPOINT", help="checkpoint prefix, or a directory (latest)"
    )
    inspect.add_argument(
        "--servers", help="bootstrap servers host:port[,...]: also show watermarks and lag"
    )
    inspect.add_argument(
        "--config",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="Kafka client property for --servers (repeatable), e.g. security.protocol=SSL",
    )
    inspect.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per cluster request (default 10)"
    )
    inspect.add_argument("--json", action="store_true", help="print a JSON document")
    return parser


def _group(rows):
    """Rows -> [(key, iterator, [rows])] in first-seen order."""
    groups = {}
    for row in rows:
        groups.setdefault((row["key"], row["iterator"]), []).append(row)
    return [(key, iterator, members) for (key, iterator), members in groups.items()]


def _total_lag(rows):
    return sum(r["lag"] for r in rows if r.get("lag") is not None)


def _document(checkpoint, rows, servers):
    fields = ("topic", "partition", "next_offset")
    if servers:
        fields += ("low", "high", "lag")
    iterators = []
    for key, iterator, members in _group(rows):
        entry = {"key": key, "iterator": iterator, "partitions": []}
        for row in members:
            out = {f: row[f] for f in fields}
            if row.get("error"):
                out["error"] = row["error"]
            entry["partitions"].append(out)
        if servers:
            entry["total_lag"] = _total_lag(members)
        iterators.append(entry)
    doc = {"checkpoint": checkpoint}
    if servers:
        doc["servers"] = servers
        doc["total_lag"] = _total_lag(rows)
    doc["iterators"] = iterators
    return doc


def _table(doc):
    servers = "servers" in doc
    lines = ["checkpoint %s" % doc["checkpoint"]]
    header = ["topic", "partition", "next_offset"] + (["low", "high", "lag"] if servers else [])
    for entry in doc["iterators"]:
        lines.append("")
        lines.append("iterator %s (%s)" % (entry["key"], entry["iterator"]))
        table = [header]
        for p in entry["partitions"]:
            cells = [p["topic"], str(p["partition"]), str(p["next_offset"])]
            if servers:
                cells += ["-" if p[f] is None else str(p[f]) for f in ("low", "high", "lag")]
                if p.get("error"):
                    cells.append("error: %s" % p["error"])
            table.append(cells)
        widths = [max(len(row[i]) for row in table if i < len(row)) for i in range(len(header))]
        for row in table:
            cells = [row[0].ljust(widths[0])]
            cells += [cell.rjust(widths[i]) for i, cell in enumerate(row[1 : len(header)], 1)]
            cells += row[len(header) :]  # an error note
            lines.append("  ".join(cells).rstrip())
        if not entry["partitions"]:
            lines.append("(no partitions assigned)")
        if servers:
            lines.append("total lag %d" % entry["total_lag"])
    if servers and len(doc["iterators"]) > 1:
        lines.append("")
        lines.append("total lag, all iterators %d" % doc["total_lag"])
    return "\n".join(lines)


def inspect_command(args):
    from kafka_dataset import inspect

    if args.servers:
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            print(
                "kafka_dataset inspect: pip install confluent-kafka to use --servers",
                file=sys.stderr,
            )
            return EXIT_ERROR
    try:
        checkpoint = inspect.resolve_checkpoint(args.checkpoint)
        rows = inspect.read_positions(checkpoint)
        if args.servers:
            rows = inspect.with_lag(rows, args.servers, dict(args.config), args.timeout)
    except inspect.InspectError as e:
        print("kafka_dataset inspect: %s" % e, file=sys.stderr)
        return EXIT_ERROR
    doc = _document(checkpoint, rows, args.servers)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(_table(doc))
    return EXIT_PARTIAL if any(r.get("error") for r in rows) else 0


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.command == "inspect":
        try:
            return inspect_command(args)
        except KeyboardInterrupt:
            return 130
        except Exception as e:  # a one-line message, never a traceback
            first = (str(e).strip().splitlines() or [""])[0]
            print(
                "kafka_dataset inspect: %s: %s: %s" % (args.checkpoint, type(e).__name__, first),
                file=sys.stderr,
            )
            return EXIT_ERROR
    return diagnostics()


if __name__ == "__main__":
    sys.exit(main())
