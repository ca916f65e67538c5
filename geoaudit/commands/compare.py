"""`geoaudit compare` (being written)."""
from geoaudit._errors import GeoauditError


def register(sub):
    p = sub.add_parser("compare", help="(not yet available)")
    p.set_defaults(func=_run)


def _run(args):
    raise GeoauditError("'compare' is not available yet.")
