# A geoaudit checkpoint: its input size and normalisation come from its config.json, so the
# images are resized to the size it was trained at (passing another image_size is refused).
from geoaudit.audit import audit_model
from geoaudit.data import load_geo_dataset

ds = load_geo_dataset("geo_data", "test")
report, predictions = audit_model("runs/plain/model_000", ds, min_group_size=5)
print(report.summary())
