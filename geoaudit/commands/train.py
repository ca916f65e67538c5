"""`geoaudit train` (being written)."""
from geoaudit._errors import GeoauditError


def register(sub):
    p = sub.add_parser("train", help="(not yet available)")
    p.set_defaults(func=_run)


def _run(args):
    raise GeoauditError("'train' is not available yet.")
