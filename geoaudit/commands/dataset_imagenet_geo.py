"""`geoaudit imagenet-geo` (being written)."""
from geoaudit._errors import GeoauditError


def register(sub):
    p = sub.add_parser("imagenet-geo", help="(not yet available)")
    p.set_defaults(func=_run)


def _run(args):
    raise GeoauditError("'imagenet-geo' is not available yet.")


def register_info(sub):
    p = sub.add_parser("info", help="(not yet available)")
    p.set_defaults(func=_run)
