"""Converters of other frameworks' checkpoints: TensorFlow DeepLab (tf_bundle reads the files, tf_deeplab maps
the variables)."""
