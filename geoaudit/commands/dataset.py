"""`geoaudit dataset build NAME ...` and `geoaudit dataset info DIR`."""
from __future__ import annotations

from geoaudit.commands import dataset_geoshapes, dataset_imagenet_geo


def register(sub):
    p = sub.add_parser("dataset", help="build or describe a geo-located image dataset",
                       description="Build a dataset folder (Parquet shards + dataset card) or describe one.")
    dsub = p.add_subparsers(dest="dataset_command", metavar="{build,info}")
    b = dsub.add_parser("build", help="build a dataset into a folder that datasets.load_dataset(DIR) loads")
    bsub = b.add_subparsers(dest="dataset_name", metavar="{geoshapes,imagenet-geo}")
    dataset_geoshapes.register(bsub)
    dataset_imagenet_geo.register(bsub)
    b.set_defaults(func=lambda a: (b.print_help(), 2)[1])
    dataset_imagenet_geo.register_info(dsub)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
