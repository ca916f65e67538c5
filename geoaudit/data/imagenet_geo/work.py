"""The work database: every stage's state, so a killed build resumes where it stopped."""
from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from pathlib import Path



log = logging.getLogger(__name__)
from geoaudit.data.imagenet_geo.inputs import FORMAT_VERSION  # noqa: F401


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS images (
    image_id TEXT PRIMARY KEY, wnid TEXT NOT NULL, relpath TEXT NOT NULL, split TEXT NOT NULL,
    photo_id TEXT, status TEXT, latitude REAL, longitude REAL,
    iso3 TEXT, country_name TEXT, method TEXT,
    accuracy INTEGER, flickr_country TEXT, flickr_iso3 TEXT);
CREATE INDEX IF NOT EXISTS images_split ON images (split, iso3, image_id);
CREATE TABLE IF NOT EXISTS chunks (
    config TEXT, split TEXT, k INTEGER, rows INTEGER, nbytes INTEGER, corrupt TEXT,
    PRIMARY KEY (config, split, k));
"""

# statuses of an image in the work database (low_accuracy: located less precisely than the
# minimum accuracy asked for; not_selected: left out by the synsets / per-class options)
#   not_listed: not in the URL list / geo CSV; not_flickr: its URL is not a Flickr photo;
#   pending: awaiting a Flickr answer; ok / no_location / not_found: Flickr's answer
#   (or the CSV's); invalid: the CSV's coordinates are missing; lookup_failed: transient
#   failures outlasted the retries (only with max_failed_lookups > 0)


class _Work:
    def __init__(self, path: Path):
        path.mkdir(parents=True, exist_ok=True)
        self.dir = path
        self.db = sqlite3.connect(str(path / "work.sqlite"))
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)
        self.db.commit()

    def get(self, key, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set(self, key, value):
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))
        self.db.commit()

    def close(self):
        self.db.close()


def _open_work(work_dir: Path, fingerprint: str) -> _Work:
    if (work_dir / "work.sqlite").exists():
        w = _Work(work_dir)
        try:
            old = w.get("fingerprint")
        except sqlite3.DatabaseError:
            old = None
        if old == fingerprint:
            log.info("Reusing the work folder %s: finished stages and shards are skipped.", work_dir)
            return w
        w.close()
        log.warning("The inputs or options differ from the interrupted build in %s; starting over "
                    "(cached Flickr answers are kept).", work_dir)
        shutil.rmtree(work_dir)
    w = _Work(work_dir)
    w.set("fingerprint", fingerprint)
    return w
