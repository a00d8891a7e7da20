"""`python -m kafka_dataset`: where the op library is looked for, and whether it loads."""

import sys

import tensorflow as tf

import kafka_dataset


def main():
    print("kafka_dataset %s (%s)" % (kafka_dataset.__version__, kafka_dataset.__file__))
    print("tensorflow %s" % tf.__version__)
    print("library %s" % kafka_dataset.library_path())
    try:
        ops = kafka_dataset.load_library()
    except kafka_dataset.LibraryError as e:
        print("NOT LOADED: %s" % e)
        return 1
    print("loaded; op wrapper %s" % ops.kd_kafka_dataset.__name__)
    print("tf.data.KafkaDataset -> %s" % tf.data.KafkaDataset.__qualname__)
    print("tf.compat.v1.data.KafkaDataset -> %s" % tf.compat.v1.data.KafkaDataset.__qualname__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
